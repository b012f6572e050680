import { z } from 'zod'

// A saved machine: everything needed to start one VM the same way from the app and the CLI,
// kept in the shared library file (main/engine/library.ts) beside images and trust records.

/** A machine's name: what `addcow machine start NAME` takes. */
export const MachineNameSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/, {
  message: 'is not a machine name (letters, digits, . _ -, at most 64)',
})

const PathSchema = z
  .string()
  .min(1)
  .max(4096)
  .startsWith('/')
  .refine((text) => !text.includes('\0'), { message: 'must not contain a NUL character' })

/** What boots: the disk, a CD-ROM image (first), or a kernel with initrd and command line. */
export const MachineBootSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('disk') }),
  z.strictObject({ kind: z.literal('cdrom'), iso: PathSchema }),
  z.strictObject({
    kind: z.literal('kernel'),
    kernel: PathSchema,
    initrd: PathSchema.optional(),
    cmdline: z.string().max(4096).optional(),
  }),
])

/** A host port forwarded to the guest (user networking). */
export const PortForwardSchema = z.strictObject({
  protocol: z.enum(['tcp', 'udp']),
  hostAddress: z
    .string()
    .regex(/^[0-9A-Fa-f.:]{2,45}$/)
    .optional(),
  hostPort: z.number().int().min(1).max(65535),
  guestPort: z.number().int().min(1).max(65535),
})

/** A host port forward. */
export type PortForward = z.output<typeof PortForwardSchema>

/**
 * A port forward as `addcow machine save --forward` and the app's machine form spell it:
 * `tcp:2222:22` or `udp:127.0.0.1:5353:53`; null when the text is not one (ports 1 to 65535).
 */
export function parsePortForward(text: string): PortForward | null {
  const match = /^(tcp|udp):(?:([0-9A-Fa-f.:]+):)?(\d{1,5}):(\d{1,5})$/.exec(text)
  if (!match) return null
  const parsed = PortForwardSchema.safeParse({
    protocol: match[1],
    ...(match[2] !== undefined ? { hostAddress: match[2] } : {}),
    hostPort: Number(match[3]),
    guestPort: Number(match[4]),
  })
  return parsed.success ? parsed.data : null
}

/** The spelling {@link parsePortForward} reads. */
export function portForwardText(forward: PortForward): string {
  return [forward.protocol, forward.hostAddress, forward.hostPort, forward.guestPort]
    .filter((part) => part !== undefined)
    .join(':')
}

/** A saved machine (version 1 of its shape in the library file). */
export const SavedMachineSchema = z.strictObject({
  name: MachineNameSchema,
  /** The image the machine boots (absolute). */
  disk: PathSchema,
  via: z.enum(['nbd', 'native', 'raw']).default('nbd'),
  memoryMiB: z
    .number()
    .int()
    .min(16)
    .max(16 * 1024 * 1024)
    .default(2048),
  cpus: z.number().int().min(1).max(1024).default(2),
  /** Machine type; absent: the architecture's default (q35 on x86). */
  machine: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]{0,63}$/)
    .optional(),
  firmware: z.enum(['bios', 'uefi']).default('bios'),
  /** The OVMF code image for UEFI; absent: the first of Debian's ovmf paths found. */
  uefiCode: PathSchema.optional(),
  boot: MachineBootSchema.default({ kind: 'disk' }),
  network: z.enum(['user', 'none']).default('user'),
  portForwards: z.array(PortForwardSchema).max(32).default([]),
  /** `app`: the graphical console in the app (VNC on a Unix socket in the VM's folder). */
  display: z.enum(['default', 'gtk', 'sdl', 'vnc', 'app', 'none']).default('none'),
  /** auto: KVM when a test guest runs on it, else TCG (the reason is shown). */
  accel: z.enum(['auto', 'kvm', 'tcg']).default('auto'),
  readOnly: z.boolean().default(false),
  /** Copy what the guest reads from the base into the overlay (via nbd; `--copy-on-read`). */
  copyOnRead: z.boolean().default(false),
  extraArgs: z.array(z.string().max(4096)).max(64).default([]),
})

/** A saved machine as stored (every default filled in). */
export type SavedMachine = z.output<typeof SavedMachineSchema>
/** A saved machine as given (defaults may be left out). */
export type SavedMachineInput = z.input<typeof SavedMachineSchema>
