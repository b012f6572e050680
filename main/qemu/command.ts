import { basename } from 'node:path'
import { EngineError } from '../engine/errors'
import { hostArch } from './binaries'

/** How QEMU reaches the overlay's guest view. */
export type QemuVia = 'nbd' | 'native' | 'raw'

/** The disk QEMU boots from. */
export type QemuDiskSource =
  /** Through `addcow serve`: a Unix socket, or TCP (with optional TLS: PSK or X.509). */
  | {
      via: 'nbd'
      socket?: string
      host?: string
      port?: number
      exportName: string
      /** TLS: a folder holding keys.psk and the identity to use from it, or X.509 certificates. */
      tls?: NbdClientTls
      /** The image being served (for the explanation and the serve line). */
      image?: string
      /** More options for the serve line, before the image (format, name policy). */
      serveOptions?: string[]
    }
  /** The add-cow file itself, for a QEMU built with the add-cow driver. */
  | { via: 'native'; path: string }
  /** The raw image file of a flattened overlay (or a raw image). */
  | { via: 'raw'; path: string }

/**
 * TLS for an NBD disk, as QEMU's client objects take it: `tls-creds-psk` (a folder with
 * keys.psk and an identity) or `tls-creds-x509` (a folder with ca-cert.pem, and client-cert.pem
 * with client-key.pem when the export checks clients), the layout libvirt and QEMU share.
 */
export type NbdClientTls = { pskFolder: string; username: string } | { x509Folder: string }

/**
 * What the guest boots: its disk (default), a CD-ROM image (first, the disk second), or a
 * kernel with an optional initrd and command line (the disk then gets no boot index: QEMU gives
 * boot index 0 to the kernel, and a second one fails with "The bootindex 0 has already been used").
 */
export type QemuBootSource =
  | { kind: 'disk' }
  | { kind: 'cdrom'; iso: string }
  | { kind: 'kernel'; kernel: string; initrd?: string; cmdline?: string }

/**
 * Firmware: SeaBIOS (QEMU's default) or UEFI from an OVMF code image (read-only pflash), with
 * the machine's own variable store (a writable pflash, first copied from the template beside
 * the code image) so UEFI settings and boot entries survive reboots; without one, they do not.
 */
export type QemuFirmware =
  { kind: 'bios' } | { kind: 'uefi'; code: string; vars?: UefiVariableStore }

/** A machine's UEFI variable store: its file, and the OVMF template it starts as a copy of. */
export interface UefiVariableStore {
  file: string
  template: string
}

/** Options in extra arguments that set the boot order themselves: the disk then gets none. */
const BOOT_ORDER_OPTIONS = new Set(['-kernel', '-boot', '-cdrom'])

/** Whether extra arguments choose what boots (a kernel, -boot, a CD-ROM, a bootindex=). */
export function extraArgsSetBoot(extraArgs: readonly string[]): boolean {
  return extraArgs.some(
    (arg) => BOOT_ORDER_OPTIONS.has(arg.replace(/^--/, '-')) || /(^|,)bootindex=/.test(arg),
  )
}

/** What the machine looks like; everything has a default. */
export interface QemuMachineOptions {
  /** Executable to run (default `qemu-system-ARCH`, found on PATH at launch). */
  binary?: string
  /** QEMU target architecture (default: the host's). */
  arch?: string
  /** Machine type (default q35 on x86, virt on Arm and RISC-V). */
  machine?: string
  /** Accelerator, already resolved (see resolveAccelerator); default tcg. */
  accel?: 'kvm' | 'tcg'
  /** Why this accelerator (resolveAccelerator's reason), shown in the explanation. */
  accelReason?: string
  /** Memory in MiB (default 2048). */
  memoryMiB?: number
  /** Virtual CPUs (default 2). */
  cpus?: number
  /** -display value: 'none' for headless; default: QEMU's own choice. */
  display?: string
  /**
   * The guest's screen as a VNC server on this Unix socket (`-vnc unix:PATH`), for the app's
   * graphical console; never TCP. QEMU then opens no window of its own.
   */
  vncSocket?: string
  /** 'user': NAT networking with a virtio NIC (default); 'none': no network. */
  network?: 'user' | 'none'
  /** The guest's disk controller (default virtio). */
  diskInterface?: 'virtio' | 'ide'
  /** Attach the disk read-only. */
  readOnly?: boolean
  /** Serial console: the terminal (stdio, default), a file, QEMU's window (vc), or none. */
  serial?: 'stdio' | 'vc' | 'none' | { file: string }
  /** QMP control socket (the launcher uses one). */
  qmpSocket?: string
  /** VM name (window title, process name); default `addcow-<image name>`. */
  name?: string
  /** What boots (default the disk). */
  boot?: QemuBootSource
  /** BIOS (default) or UEFI. */
  firmware?: QemuFirmware
  /** Host ports forwarded to the guest with user networking. */
  portForwards?: PortForward[]
  /** Passed through at the end, as given. */
  extraArgs?: string[]
}

/** A host port forwarded to a guest port (user networking's hostfwd). */
export interface PortForward {
  protocol: 'tcp' | 'udp'
  /** Host address to listen on (default 127.0.0.1: loopback only). */
  hostAddress?: string
  hostPort: number
  guestPort: number
}

/** Options of {@link buildQemuCommand}. */
export interface QemuCommandOptions extends QemuMachineOptions {
  disk: QemuDiskSource
}

/** One group of arguments and why it is there. */
export interface ExplainedArgs {
  args: string[]
  explanation: string
}

/** A QEMU command line: the argument array to spawn, and a rendering for people. */
export interface QemuCommand {
  via: QemuVia
  binary: string
  /** Arguments after the binary (never a shell string). */
  args: string[]
  /** The same arguments in groups, each explained. */
  explained: ExplainedArgs[]
  /** Shell-quoted, one option per line, with the explanations as comments: copy and run. */
  rendering: string
  /** What must run first (the export for --via nbd), as an argument array, or null. */
  prerequisite: { args: string[]; explanation: string } | null
}

/** Default memory in MiB. */
export const DEFAULT_MEMORY_MIB = 2048
/** Default virtual CPUs. */
export const DEFAULT_CPUS = 2
/** The block node and device id of the boot disk. */
const DISK_ID = 'disk0'

/** Default machine type for an architecture. */
export function defaultMachine(arch: string): string {
  if (arch === 'x86_64' || arch === 'i386') return 'q35'
  if (arch === 'aarch64' || arch === 'arm' || arch === 'riscv64' || arch === 'riscv32')
    return 'virt'
  if (arch === 's390x') return 's390-ccw-virtio'
  if (arch === 'ppc64') return 'pseries'
  return 'none'
}

/** The default VM name for an image: `addcow-<file name>`, safe for QEMU's -name. */
export function vmName(image: string): string {
  return `addcow-${basename(image).replace(/[^A-Za-z0-9._-]/g, '_')}`
}

/** Escape a value inside a QEMU option list (a comma is written twice). */
export function qemuOptionValue(value: string): string {
  return value.replace(/,/g, ',,')
}

/** Quote one argument for a POSIX shell when it needs it. */
export function shellQuote(arg: string): string {
  if (arg !== '' && /^[A-Za-z0-9_./:=,@%+-]+$/.test(arg)) return arg
  return `'${arg.replace(/'/g, `'\\''`)}'`
}

function positiveInteger(value: number, what: string, max: number): number {
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `The ${what} ${value} is not a whole number between 1 and ${max}.`,
      { field: what, value },
    )
  }
  return value
}

/** QEMU's client TLS object (id tls0) for an NBD disk. */
function tlsObject(tls: NbdClientTls): ExplainedArgs {
  if ('x509Folder' in tls) {
    return {
      args: [
        '-object',
        `tls-creds-x509,id=tls0,endpoint=client,dir=${qemuOptionValue(tls.x509Folder)}`,
      ],
      explanation: `TLS credentials: X.509, the export's certificate checked against ${tls.x509Folder}/ca-cert.pem (and client-cert.pem presented when there)`,
    }
  }
  return {
    args: [
      '-object',
      `tls-creds-psk,id=tls0,endpoint=client,dir=${qemuOptionValue(tls.pskFolder)},username=${qemuOptionValue(tls.username)}`,
    ],
    explanation: `TLS credentials: the pre-shared key of '${tls.username}' in ${tls.pskFolder}/keys.psk`,
  }
}

function diskArgs(disk: QemuDiskSource, readOnly: boolean): ExplainedArgs[] {
  const groups: ExplainedArgs[] = []
  const ro = readOnly ? ',read-only=on' : ''
  if (disk.via === 'nbd') {
    let server: string
    let where: string
    if (disk.socket !== undefined) {
      server = `server.type=unix,server.path=${qemuOptionValue(disk.socket)}`
      where = `the Unix socket ${disk.socket}`
    } else if (disk.host !== undefined && disk.port !== undefined) {
      server = `server.type=inet,server.host=${qemuOptionValue(disk.host)},server.port=${disk.port}`
      where = `${disk.host} port ${disk.port}`
    } else {
      throw new EngineError('BAD_ARGUMENT', 'An NBD disk needs a socket, or a host and a port.', {
        field: 'disk',
      })
    }
    let tls = ''
    if (disk.tls) {
      groups.push(tlsObject(disk.tls))
      tls = ',tls-creds=tls0'
    }
    const name = disk.exportName === '' ? '' : `,export=${qemuOptionValue(disk.exportName)}`
    groups.push({
      args: ['-blockdev', `driver=nbd,node-name=${DISK_ID},${server}${name}${tls}${ro}`],
      explanation: `the disk: the guest view of ${disk.image ?? 'the image'} served by addcow serve over NBD at ${where}`,
    })
  } else if (disk.via === 'native') {
    groups.push({
      args: [
        '-drive',
        `file=${qemuOptionValue(disk.path)},format=add-cow,if=none,id=${DISK_ID}${ro}`,
      ],
      explanation: `the disk: ${disk.path} opened by QEMU's own add-cow driver (a QEMU built with it; QEMU follows the names stored in the image itself, without addcow's name policy)`,
    })
  } else {
    groups.push({
      args: ['-drive', `file=${qemuOptionValue(disk.path)},format=raw,if=none,id=${DISK_ID}${ro}`],
      explanation: `the disk: the flattened overlay's raw image file ${disk.path}, at full raw speed`,
    })
  }
  return groups
}

/**
 * Build the QEMU command line for an overlay: `nbd` through the export (stock QEMU), `native`
 * (a QEMU with the add-cow driver), or `raw` (the flattened image file). Pure: the caller
 * resolves the accelerator and checks that the source exists and suits the mode.
 */
export function buildQemuCommand(options: QemuCommandOptions): QemuCommand {
  const arch = options.arch ?? hostArch()
  const binary = options.binary ?? `qemu-system-${arch}`
  const accel = options.accel ?? 'tcg'
  const memory = positiveInteger(
    options.memoryMiB ?? DEFAULT_MEMORY_MIB,
    'memory size (MiB)',
    16 * 1024 * 1024,
  )
  const cpus = positiveInteger(options.cpus ?? DEFAULT_CPUS, 'CPU count', 4096)
  const machine = options.machine ?? defaultMachine(arch)
  const image = options.disk.via === 'nbd' ? options.disk.image : options.disk.path
  const name =
    options.name ?? `addcow-${basename(image ?? 'disk').replace(/[^A-Za-z0-9._-]/g, '_')}`
  const groups: ExplainedArgs[] = [
    {
      args: ['-name', name],
      explanation: 'the name QEMU shows in its window title and process list',
    },
    {
      args: ['-machine', machine],
      explanation: `machine type ${machine}${machine === 'q35' ? ' (a modern PC: PCIe, AHCI)' : ''}`,
    },
    {
      args: ['-accel', accel],
      explanation:
        accel === 'kvm'
          ? `hardware virtualisation through /dev/kvm${options.accelReason !== undefined ? ` (${options.accelReason})` : ''}`
          : options.accelReason !== undefined
            ? `software emulation (TCG), slower: ${options.accelReason}`
            : 'software emulation (TCG): slower, works without /dev/kvm',
    },
  ]
  if (accel === 'kvm')
    groups.push({ args: ['-cpu', 'host'], explanation: "the guest sees the host's CPU model" })
  groups.push(
    { args: ['-m', String(memory)], explanation: `${memory} MiB of guest memory` },
    { args: ['-smp', String(cpus)], explanation: `${cpus} virtual CPU${cpus === 1 ? '' : 's'}` },
    ...diskArgs(options.disk, options.readOnly ?? false),
  )
  const boot = options.boot ?? { kind: 'disk' }
  const userBoot = extraArgsSetBoot(options.extraArgs ?? [])
  // The disk's boot index: first, second after a CD-ROM, none after a kernel or when the
  // extra arguments choose the boot order.
  const diskIndex = userBoot || boot.kind === 'kernel' ? null : boot.kind === 'cdrom' ? 1 : 0
  const bootText =
    diskIndex === 0
      ? ', the first boot device'
      : diskIndex === 1
        ? ', the second boot device (after the CD-ROM)'
        : boot.kind === 'kernel'
          ? ' (no boot index: QEMU boots the kernel)'
          : ' (no boot index: the extra arguments choose what boots)'
  const indexText = diskIndex === null ? '' : `,bootindex=${diskIndex}`
  groups.push(
    (options.diskInterface ?? 'virtio') === 'virtio'
      ? {
          args: ['-device', `virtio-blk-pci,drive=${DISK_ID}${indexText}`],
          explanation: `a virtio disk for the guest${bootText}`,
        }
      : {
          args: ['-device', `ide-hd,drive=${DISK_ID}${indexText}`],
          explanation: `an IDE disk for the guest (for guests without virtio drivers)${bootText}`,
        },
  )
  if (boot.kind === 'cdrom') {
    groups.push({
      args: [
        '-drive',
        `file=${qemuOptionValue(boot.iso)},format=raw,media=cdrom,readonly=on,if=none,id=cd0`,
        '-device',
        `ide-cd,drive=cd0${userBoot ? '' : ',bootindex=0'}`,
      ],
      explanation: `the CD-ROM image ${boot.iso}${userBoot ? '' : ', the first boot device'}`,
    })
  } else if (boot.kind === 'kernel') {
    const kernelArgs = ['-kernel', boot.kernel]
    if (boot.initrd !== undefined) kernelArgs.push('-initrd', boot.initrd)
    if (boot.cmdline !== undefined && boot.cmdline !== '') kernelArgs.push('-append', boot.cmdline)
    groups.push({
      args: kernelArgs,
      explanation: `boot the kernel ${boot.kernel} directly${boot.initrd !== undefined ? ` with the initrd ${boot.initrd}` : ''}${boot.cmdline ? ' and its command line' : ''}`,
    })
  }
  const firmware = options.firmware ?? { kind: 'bios' }
  if (firmware.kind === 'uefi') {
    groups.push({
      args: [
        '-drive',
        `if=pflash,format=raw,unit=0,readonly=on,file=${qemuOptionValue(firmware.code)}`,
      ],
      explanation: `UEFI firmware: the OVMF code image ${firmware.code}, read-only${firmware.vars ? '' : ' (no variable store: settings are not kept)'}`,
    })
    if (firmware.vars) {
      groups.push({
        args: ['-drive', `if=pflash,format=raw,unit=1,file=${qemuOptionValue(firmware.vars.file)}`],
        explanation: `the UEFI variable store ${firmware.vars.file}, writable: boot entries and settings survive reboots (first a copy of ${firmware.vars.template})`,
      })
    }
  }
  const network = options.network ?? 'user'
  if (network === 'user') {
    const forwards = (options.portForwards ?? []).map((forward) => {
      positiveInteger(forward.hostPort, 'host port', 65535)
      positiveInteger(forward.guestPort, 'guest port', 65535)
      const address = forward.hostAddress ?? '127.0.0.1'
      if (!/^[0-9A-Za-z.:-]*$/.test(address))
        throw new EngineError('BAD_ARGUMENT', `The host address '${address}' is not an address.`, {
          field: 'hostAddress',
          value: address,
        })
      return `,hostfwd=${forward.protocol}:${address}:${forward.hostPort}-:${forward.guestPort}`
    })
    groups.push({
      args: ['-nic', `user,model=virtio-net-pci${forwards.join('')}`],
      explanation:
        "user-mode networking: the guest reaches the host's network through NAT" +
        (forwards.length > 0
          ? `; host ${(options.portForwards ?? []).map((forward) => `${forward.protocol} ${forward.hostAddress ?? '127.0.0.1'}:${forward.hostPort} → guest ${forward.guestPort}`).join(', ')}`
          : ''),
    })
  } else {
    groups.push({ args: ['-nic', 'none'], explanation: 'no network card' })
  }
  if (options.display !== undefined) {
    groups.push({
      args: ['-display', options.display],
      explanation:
        options.display === 'none' ? 'no window (headless)' : `the ${options.display} display`,
    })
  }
  if (options.vncSocket !== undefined) {
    groups.push({
      args: ['-vnc', `unix:${qemuOptionValue(options.vncSocket)}`],
      explanation:
        "the guest's screen as VNC on a Unix socket in the VM's private folder, shown in the app's graphical console (no TCP port)",
    })
  }
  const serial = options.serial ?? 'stdio'
  if (serial === 'stdio') {
    groups.push({
      args: ['-chardev', 'stdio,id=console0,signal=off', '-serial', 'chardev:console0'],
      explanation:
        "the guest's first serial port on this terminal (signal=off: Ctrl-C reaches the guest, it does not kill QEMU)",
    })
  } else if (serial === 'vc') {
    groups.push({
      args: ['-serial', 'vc'],
      explanation: "the guest's first serial port in a tab of QEMU's window",
    })
  } else if (serial === 'none') {
    groups.push({ args: ['-serial', 'none'], explanation: 'no serial port' })
  } else {
    groups.push({
      args: ['-serial', `file:${serial.file}`],
      explanation: `the guest's first serial port written to ${serial.file}`,
    })
  }
  if (options.qmpSocket !== undefined) {
    groups.push({
      args: ['-qmp', `unix:${qemuOptionValue(options.qmpSocket)},server=on,wait=off`],
      explanation:
        'QMP control socket: the power controls (shut down, pause, resume, reset) and a clean stop',
    })
  }
  if (options.extraArgs && options.extraArgs.length > 0) {
    groups.push({
      args: [...options.extraArgs],
      explanation: 'extra arguments, passed through as given',
    })
  }

  const disk = options.disk
  let prerequisite: QemuCommand['prerequisite'] = null
  if (disk.via === 'nbd' && disk.image !== undefined) {
    const listen =
      disk.socket !== undefined
        ? ['--socket', disk.socket]
        : ['--host', disk.host ?? '127.0.0.1', '--port', String(disk.port)]
    const serveArgs = ['addcow', 'serve', ...listen]
    if (disk.exportName !== '') serveArgs.push('--export', disk.exportName)
    if (options.readOnly) serveArgs.push('--read-only')
    if (disk.tls && 'x509Folder' in disk.tls) serveArgs.push('--tls-creds', disk.tls.x509Folder)
    else if (disk.tls) serveArgs.push('--tls-psk-file', `${disk.tls.pskFolder}/keys.psk`)
    serveArgs.push(...(disk.serveOptions ?? []), disk.image)
    prerequisite = { args: serveArgs, explanation: 'start the export; it runs until Ctrl-C' }
  }
  const args = groups.flatMap((group) => group.args)
  return {
    via: disk.via,
    binary,
    args,
    explained: groups,
    rendering: render(binary, groups, prerequisite, disk.via),
    prerequisite,
  }
}

function render(
  binary: string,
  groups: ExplainedArgs[],
  prerequisite: QemuCommand['prerequisite'],
  via: QemuVia,
): string {
  const lines: string[] = []
  const title = {
    nbd: 'Boot the overlay in stock QEMU through the NBD export.',
    native: 'Boot the overlay in a QEMU built with the add-cow driver.',
    raw: "Boot the flattened overlay's raw image file directly.",
  }[via]
  lines.push(`# ${title}`)
  if (prerequisite) {
    lines.push(
      `# First ${prerequisite.explanation}:`,
      `#   ${prerequisite.args.map(shellQuote).join(' ')}`,
    )
  }
  lines.push(...commandLines(binary, groups))
  lines.push('#', '# What each option does:')
  const width = Math.min(
    48,
    Math.max(...groups.map((group) => group.args.map(shellQuote).join(' ').length)),
  )
  for (const group of groups) {
    lines.push(`#   ${group.args.map(shellQuote).join(' ').padEnd(width)}  ${group.explanation}`)
  }
  return lines.join('\n') + '\n'
}

/**
 * The command as shell lines: the binary, then one option per line (an argument starting with
 * '-' opens a line, its values follow it), each quoted, continued with a backslash.
 */
export function commandLines(binary: string, groups: readonly ExplainedArgs[]): string[] {
  const lines = [`${shellQuote(binary)} \\`]
  groups.forEach((group, index) => {
    const options: string[][] = []
    for (const arg of group.args) {
      const current = options[options.length - 1]
      if (!current || arg.startsWith('-')) options.push([arg])
      else current.push(arg)
    }
    options.forEach((option, optionIndex) => {
      const last = index === groups.length - 1 && optionIndex === options.length - 1
      lines.push(`  ${option.map(shellQuote).join(' ')}${last ? '' : ' \\'}`)
    })
  })
  return lines
}
