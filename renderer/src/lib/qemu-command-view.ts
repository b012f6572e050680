import type { RequestOf, ResponseOf } from '../../../shared/ipc/contract'

/** The QEMU command line main builds (`qemu:get-command`). */
export type QemuCommand = ResponseOf<'qemu:get-command'>

/** How QEMU reaches the disk. */
export type LaunchVia = QemuCommand['via']

/** What the launch form holds, before it becomes a request. */
export interface LaunchForm {
  via: LaunchVia
  /** Empty: the default machine of the host's architecture. */
  machine: string
  memoryMiB: number
  cpus: number
  /** `app`: the graphical console in the app (VNC on a private socket, bridged). */
  display: 'default' | 'gtk' | 'sdl' | 'vnc' | 'app' | 'none'
  network: 'user' | 'none'
  readOnly: boolean
  /** Copy what the guest reads from the base into the overlay (needs the NBD export). */
  copyOnRead: boolean
  /** Extra QEMU arguments as typed, split like a shell would. */
  extraArgs: string
}

/** The form's starting values (the same defaults as `addcow launch`). */
export const DEFAULT_LAUNCH_FORM: LaunchForm = {
  via: 'nbd',
  machine: '',
  memoryMiB: 2048,
  cpus: 2,
  display: 'default',
  network: 'user',
  readOnly: false,
  copyOnRead: false,
  extraArgs: '',
}

/** Quote one argument for a POSIX shell when it needs it (as main/qemu/command.ts does). */
export function shellQuote(arg: string): string {
  if (arg !== '' && /^[A-Za-z0-9_./:=,@%+-]+$/.test(arg)) return arg
  return `'${arg.replace(/'/g, `'\\''`)}'`
}

/**
 * Split typed arguments as a POSIX shell does for words: blanks separate, single quotes keep
 * everything, double quotes keep all but `\"` and `\\`, a backslash outside quotes escapes the
 * next character. No expansion of any kind. Returns an error sentence for an open quote.
 */
export function splitArguments(text: string): { args: string[] } | { error: string } {
  const args: string[] = []
  let current = ''
  let inWord = false
  let quote: "'" | '"' | null = null
  for (let index = 0; index < text.length; index++) {
    const char = text.charAt(index)
    if (quote === "'") {
      if (char === "'") quote = null
      else current += char
    } else if (quote === '"') {
      if (char === '"') quote = null
      else if (char === '\\' && (text[index + 1] === '"' || text[index + 1] === '\\')) {
        current += text.charAt(index + 1)
        index++
      } else current += char
    } else if (char === "'" || char === '"') {
      quote = char
      inWord = true
    } else if (char === '\\' && index + 1 < text.length) {
      current += text.charAt(index + 1)
      index++
      inWord = true
    } else if (/\s/.test(char)) {
      if (inWord) args.push(current)
      current = ''
      inWord = false
    } else {
      current += char
      inWord = true
    }
  }
  if (quote !== null)
    return {
      error: `The extra arguments have a ${quote === "'" ? 'single' : 'double'} quote that is never closed.`,
    }
  if (inWord) args.push(current)
  return { args }
}

/** The request for `qemu:get-command` and `qemu:launch-vm`, or an error sentence. */
export function launchRequest(
  path: string,
  form: LaunchForm,
): { request: RequestOf<'qemu:launch-vm'> } | { error: string } {
  const extra = splitArguments(form.extraArgs)
  if ('error' in extra) return extra
  if (extra.args.length > 64)
    return { error: `There are ${extra.args.length} extra arguments; at most 64 are accepted.` }
  const machine = form.machine.trim()
  if (machine !== '' && !/^[a-z0-9][a-z0-9._-]{0,63}$/.test(machine))
    return { error: `The machine type '${machine}' is not a plain name such as q35 or pc.` }
  if (!Number.isInteger(form.memoryMiB) || form.memoryMiB < 16)
    return { error: `The memory size ${form.memoryMiB} MiB is below the 16 MiB minimum.` }
  if (!Number.isInteger(form.cpus) || form.cpus < 1 || form.cpus > 1024)
    return { error: `The CPU count ${form.cpus} is not a whole number from 1 to 1024.` }
  const request: RequestOf<'qemu:launch-vm'> = {
    path,
    via: form.via,
    memoryMiB: form.memoryMiB,
    cpus: form.cpus,
    headless: form.display === 'none',
    readOnly: form.readOnly,
    network: form.network,
  }
  if (machine !== '') request.machine = machine
  if (form.copyOnRead) request.copyOnRead = true
  if (form.display !== 'default' && form.display !== 'none') request.display = form.display
  if (extra.args.length > 0) request.extraArgs = extra.args
  return { request }
}

/** One option of the command line and why it is there. */
export interface CommandRow {
  /** The option as typed in a shell: `-m 2048`. */
  text: string
  /** Why it is there (shared by the options of one group). */
  explanation: string
  /** The first row of its group (later rows of a group repeat nothing). */
  first: boolean
  /** Options in the group: the rows the explanation spans. */
  groupSize: number
}

/** Cut a group's arguments into options: an argument starting with `-` opens one. */
function optionsOf(args: readonly string[]): string[][] {
  const options: string[][] = []
  for (const arg of args) {
    const current = options[options.length - 1]
    if (!current || arg.startsWith('-')) options.push([arg])
    else current.push(arg)
  }
  return options
}

/** The command line as rows: one per option, each with its group's explanation. */
export function commandRows(command: QemuCommand): CommandRow[] {
  return command.explained.flatMap((group) => {
    const options = optionsOf(group.args)
    return options.map((option, index) => ({
      text: option.map(shellQuote).join(' '),
      explanation: group.explanation,
      first: index === 0,
      groupSize: options.length,
    }))
  })
}

/**
 * The command line to copy: shell-quoted, one option per line joined by backslashes; with the
 * NBD export that must run first as a comment above it, since it runs until stopped.
 */
export function commandText(command: QemuCommand): string {
  const lines: string[] = []
  if (command.prerequisite) {
    const first = command.prerequisite.explanation
    lines.push(
      `# ${first.charAt(0).toUpperCase()}${first.slice(1)}:`,
      `#   ${command.prerequisite.args.map(shellQuote).join(' ')}`,
    )
  }
  const options = command.explained.flatMap((group) => optionsOf(group.args))
  lines.push(options.length === 0 ? shellQuote(command.binary) : `${shellQuote(command.binary)} \\`)
  options.forEach((option, index) => {
    const last = index === options.length - 1
    lines.push(`  ${option.map(shellQuote).join(' ')}${last ? '' : ' \\'}`)
  })
  return lines.join('\n') + '\n'
}

/** How a VM ended, in words (status 33 is the boot test's isa-debug-exit success). */
export function describeExit(exit: {
  code: number | null
  signal: string | null
  status: number
}): string {
  if (exit.signal !== null) return `QEMU was stopped by ${exit.signal} (status ${exit.status}).`
  if (exit.code === 0) return 'QEMU exited normally (status 0).'
  return `QEMU exited with status ${exit.status}.`
}

/** Memory in MiB as people read it: `512 MiB`, `2 GiB`, `1.5 GiB`. */
export function memoryText(mebibytes: number): string {
  if (mebibytes < 1024) return `${mebibytes} MiB`
  const gibibytes = mebibytes / 1024
  return `${Number.isInteger(gibibytes) ? gibibytes : gibibytes.toFixed(2).replace(/\.?0+$/, '')} GiB`
}
