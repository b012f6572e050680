import type { MachineView, RequestOf } from '../../../shared/ipc/contract'
import { parsePortForward, portForwardText, type PortForward } from '../../../shared/machine-types'
import {
  DEFAULT_LAUNCH_FORM,
  launchRequest,
  memoryText,
  shellQuote,
  type LaunchForm,
} from './qemu-command-view'

/** A saved machine as the renderer gets it (`machines:list-machines`). */
export type { MachineView }

/** A saved machine as `machines:save-machine` takes it. */
export type MachineInput = RequestOf<'machines:save-machine'>['machine']

/** The boot source as the form holds it: one kind, and the fields of every kind kept. */
export interface MachineBootForm {
  kind: 'disk' | 'cdrom' | 'kernel'
  iso: string
  kernel: string
  initrd: string
  cmdline: string
}

/**
 * What the machine form holds: the launch form's fields (the Launch screen's own component
 * edits them) and what only a saved machine has: its name, disk, firmware, boot source,
 * accelerator and port forwards (typed as `tcp:2222:22`, one per line, as the CLI's --forward).
 */
export interface MachineForm {
  name: string
  disk: string
  launch: LaunchForm
  firmware: 'bios' | 'uefi'
  /** Empty: the first OVMF image found. */
  uefiCode: string
  boot: MachineBootForm
  accel: 'auto' | 'kvm' | 'tcg'
  portForwards: string
}

const NO_BOOT_FILES: MachineBootForm = {
  kind: 'disk',
  iso: '',
  kernel: '',
  initrd: '',
  cmdline: '',
}

/** A new machine's form: the launch defaults, headless, on `disk`. */
export function newMachineForm(disk = ''): MachineForm {
  return {
    name: '',
    disk,
    launch: { ...DEFAULT_LAUNCH_FORM, display: 'none' },
    firmware: 'bios',
    uefiCode: '',
    boot: { ...NO_BOOT_FILES },
    accel: 'auto',
    portForwards: '',
  }
}

/** The form of a saved machine, to edit it. */
export function machineForm(machine: MachineView): MachineForm {
  const boot = machine.boot
  return {
    name: machine.name,
    disk: machine.disk,
    launch: {
      via: machine.via,
      machine: machine.machine ?? '',
      memoryMiB: machine.memoryMiB,
      cpus: machine.cpus,
      display: machine.display,
      network: machine.network,
      readOnly: machine.readOnly,
      copyOnRead: machine.copyOnRead,
      extraArgs: machine.extraArgs.map(shellQuote).join(' '),
    },
    firmware: machine.firmware,
    uefiCode: machine.uefiCode ?? '',
    boot: {
      ...NO_BOOT_FILES,
      kind: boot.kind,
      ...(boot.kind === 'cdrom' ? { iso: boot.iso } : {}),
      ...(boot.kind === 'kernel'
        ? { kernel: boot.kernel, initrd: boot.initrd ?? '', cmdline: boot.cmdline ?? '' }
        : {}),
    },
    accel: machine.accel,
    portForwards: machine.portForwards.map(portForwardText).join('\n'),
  }
}

/** Parse the port forwards, one `PROTOCOL:[ADDRESS:]HOSTPORT:GUESTPORT` per line. */
function parseForwards(text: string): { forwards: PortForward[] } | { error: string } {
  const forwards: PortForward[] = []
  for (const line of text.split('\n').map((entry) => entry.trim())) {
    if (line === '') continue
    const forward = parsePortForward(line)
    if (!forward)
      return {
        error: `The port forward '${line}' is not PROTOCOL:HOSTPORT:GUESTPORT with ports 1 to 65535 (e.g. tcp:2222:22).`,
      }
    forwards.push(forward)
  }
  return { forwards }
}

/** An absolute path the form needs, or the sentence saying what is wrong with it. */
function absolute(value: string, what: string): string | { error: string } {
  const path = value.trim()
  if (path === '') return { error: `Choose the ${what}.` }
  if (!path.startsWith('/')) return { error: `The ${what} '${path}' is not an absolute path.` }
  return path
}

/** The boot source of the form, or an error sentence. */
function bootOf(boot: MachineBootForm): NonNullable<MachineInput['boot']> | { error: string } {
  if (boot.kind === 'disk') return { kind: 'disk' }
  if (boot.kind === 'cdrom') {
    const iso = absolute(boot.iso, 'CD-ROM image')
    return typeof iso === 'string' ? { kind: 'cdrom', iso } : iso
  }
  const kernel = absolute(boot.kernel, 'kernel')
  if (typeof kernel !== 'string') return kernel
  const initrd = boot.initrd.trim() === '' ? undefined : absolute(boot.initrd, 'initrd')
  if (initrd !== undefined && typeof initrd !== 'string') return initrd
  return {
    kind: 'kernel',
    kernel,
    ...(initrd !== undefined ? { initrd } : {}),
    ...(boot.cmdline.trim() !== '' ? { cmdline: boot.cmdline.trim() } : {}),
  }
}

/**
 * The machine the form describes, or the first thing wrong with it in one sentence (main
 * checks the same rules again with the schema the CLI's `machine save` uses).
 */
export function machineInput(form: MachineForm): { machine: MachineInput } | { error: string } {
  const name = form.name.trim()
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name))
    return {
      error:
        name === ''
          ? 'Give the machine a name.'
          : `The name '${name}' is not a machine name (letters, digits, . _ -, at most 64, starting with a letter or digit).`,
    }
  const disk = absolute(form.disk, 'disk image')
  if (typeof disk !== 'string') return disk
  const launch = launchRequest(disk, form.launch)
  if ('error' in launch) return launch
  const boot = bootOf(form.boot)
  if ('error' in boot) return boot
  const forwards = parseForwards(form.portForwards)
  if ('error' in forwards) return forwards
  const uefiCode = form.uefiCode.trim()
  const request = launch.request
  return {
    machine: {
      name,
      disk,
      via: form.launch.via,
      memoryMiB: form.launch.memoryMiB,
      cpus: form.launch.cpus,
      ...(request.machine !== undefined ? { machine: request.machine } : {}),
      firmware: form.firmware,
      ...(form.firmware === 'uefi' && uefiCode !== '' ? { uefiCode } : {}),
      boot,
      network: form.launch.network,
      portForwards: form.launch.network === 'user' ? forwards.forwards : [],
      display: form.launch.display,
      accel: form.accel,
      readOnly: form.launch.readOnly,
      copyOnRead: form.launch.copyOnRead,
      extraArgs: request.extraArgs ?? [],
    },
  }
}

/** What boots, in a few words: `disk`, `CD-ROM debian.iso`, `kernel vmlinuz`. */
export function bootText(boot: MachineView['boot']): string {
  const file = (path: string): string => path.slice(path.lastIndexOf('/') + 1)
  if (boot.kind === 'cdrom') return `CD-ROM ${file(boot.iso)}`
  if (boot.kind === 'kernel') return `kernel ${file(boot.kernel)}`
  return 'disk'
}

/** How the machine's display reads in the list. */
export function displayText(display: MachineView['display']): string {
  return {
    default: 'a window',
    gtk: 'GTK window',
    sdl: 'SDL window',
    vnc: 'VNC',
    app: 'in the app',
    none: 'serial only',
  }[display]
}

/** Memory and CPUs in a few words: `2 GiB · 2 CPUs`. */
export function sizeText(machine: Pick<MachineView, 'memoryMiB' | 'cpus'>): string {
  return `${memoryText(machine.memoryMiB)} · ${machine.cpus} CPU${machine.cpus === 1 ? '' : 's'}`
}

/** A name for a copy of `name` that no machine in `taken` has: `name-copy`, `name-copy-2`... */
export function copyName(name: string, taken: readonly string[]): string {
  const stem = `${name.slice(0, 58)}-copy`
  if (!taken.includes(stem)) return stem
  for (let index = 2; ; index++) {
    const candidate = `${stem}-${index}`
    if (!taken.includes(candidate)) return candidate
  }
}
