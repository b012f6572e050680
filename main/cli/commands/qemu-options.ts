import { EngineError } from '../../engine/errors'
import { parseSize } from '../../engine/units'
import type { QemuVia } from '../../qemu/command'

/** Options qemu-cmd and launch share: the machine and how QEMU reaches the disk. */
export const QEMU_OPTIONS = {
  via: { type: 'string' },
  m: { type: 'string', short: 'm' },
  memory: { type: 'string' },
  cpus: { type: 'string' },
  machine: { type: 'string' },
  accel: { type: 'string' },
  network: { type: 'string' },
  display: { type: 'string' },
  binary: { type: 'string' },
  interface: { type: 'string' },
  headless: { type: 'boolean' },
  'read-only': { type: 'boolean' },
  f: { type: 'string', short: 'f' },
} as const

/** Usage text for {@link QEMU_OPTIONS}. */
export const QEMU_USAGE = `  --via nbd|native|raw  nbd: through the NBD export (stock QEMU, default); native:
                       QEMU's add-cow driver; raw: the raw image file of a flattened overlay
  --headless           no window (-display none)
  -m, --memory SIZE    guest memory, e.g. 2G or 512 (MiB) (default 2048)
  --cpus N             virtual CPUs (default 2)
  --machine TYPE       machine type (default q35 on x86)
  --accel auto|kvm|tcg accelerator (default auto: KVM when /dev/kvm is usable)
  --network user|none  user-mode NAT networking (default) or none
  --display D          QEMU's -display value (default: QEMU's choice)
  --interface virtio|ide  the guest's disk controller (default virtio)
  --binary PATH        the QEMU to run (default qemu-system-ARCH on PATH)
  --read-only          the guest cannot write the disk
  -f FMT               format of IMAGE (default: probed)`

/** Split `addcow COMMAND ... -- EXTRA` into the command's own argv and the pass-through rest. */
export function splitExtraArgs(argv: string[]): { own: string[]; extra: string[] } {
  const at = argv.indexOf('--')
  return at < 0 ? { own: argv, extra: [] } : { own: argv.slice(0, at), extra: argv.slice(at + 1) }
}

function oneOf<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
  what: string,
): T | undefined {
  if (value === undefined) return undefined
  if (!(allowed as readonly string[]).includes(value)) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `--${what} '${value}' is not one of ${allowed.join(', ')}.`,
      { field: what, value },
    )
  }
  return value as T
}

/** Memory in MiB: a bare number is MiB (as QEMU's -m), or a size with a suffix. */
export function parseMemory(text: string): number {
  if (/^\d+$/.test(text)) return Number(text)
  const bytes = parseSize(text, 'memory size')
  if (bytes % (1024 * 1024) !== 0 || bytes === 0) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `The memory size '${text}' is not a whole number of MiB.`,
      { field: 'memory', value: text },
    )
  }
  return bytes / (1024 * 1024)
}

/** The parsed shared options. */
export interface ParsedQemuOptions {
  via: QemuVia
  headless: boolean
  readOnly: boolean
  format?: string
  machine: {
    binary?: string
    machine?: string
    accel?: 'auto' | 'kvm' | 'tcg'
    memoryMiB?: number
    cpus?: number
    display?: string
    network?: 'user' | 'none'
    diskInterface?: 'virtio' | 'ide'
  }
}

/** Turn parsed {@link QEMU_OPTIONS} values into typed options, rejecting bad values. */
export function qemuOptionsFrom(values: {
  via?: string
  m?: string
  memory?: string
  cpus?: string
  machine?: string
  accel?: string
  network?: string
  display?: string
  binary?: string
  interface?: string
  headless?: boolean
  'read-only'?: boolean
  f?: string
}): ParsedQemuOptions {
  const memoryText = values.memory ?? values.m
  let cpus: number | undefined
  if (values.cpus !== undefined) {
    cpus = Number(values.cpus)
    if (!/^\d+$/.test(values.cpus) || cpus < 1 || cpus > 4096) {
      throw new EngineError(
        'BAD_ARGUMENT',
        `--cpus '${values.cpus}' is not a number between 1 and 4096.`,
        { field: 'cpus', value: values.cpus },
      )
    }
  }
  const accel = oneOf(values.accel, ['auto', 'kvm', 'tcg'] as const, 'accel')
  const network = oneOf(values.network, ['user', 'none'] as const, 'network')
  const diskInterface = oneOf(values.interface, ['virtio', 'ide'] as const, 'interface')
  return {
    via: oneOf(values.via, ['nbd', 'native', 'raw'] as const, 'via') ?? 'nbd',
    headless: values.headless ?? false,
    readOnly: values['read-only'] ?? false,
    ...(values.f !== undefined ? { format: values.f } : {}),
    machine: {
      ...(values.binary !== undefined ? { binary: values.binary } : {}),
      ...(values.machine !== undefined ? { machine: values.machine } : {}),
      ...(accel !== undefined ? { accel } : {}),
      ...(memoryText !== undefined ? { memoryMiB: parseMemory(memoryText) } : {}),
      ...(cpus !== undefined ? { cpus } : {}),
      ...(values.display !== undefined ? { display: values.display } : {}),
      ...(network !== undefined ? { network } : {}),
      ...(diskInterface !== undefined ? { diskInterface } : {}),
    },
  }
}
