import { parseArgs, type ParseArgsConfig } from 'node:util'
import { EngineError } from '../engine/errors'
import type { Disk } from '../engine/disk'
import type { Library } from '../engine/library'
import type { NamePolicy } from '../engine/names'
import { guardBaseDrift } from '../engine/ops/drift'
import { parseSize } from '../engine/units'
import type { QemuVia } from '../qemu/command'
import type { CommandContext } from './command'
import { closestMatch } from './suggest'

// Option parsing for every command, and the options several commands share. A command declares
// its options as a table (node:util parseArgs' configuration); the runner parses argv with it.

/** A command's option table: long name → type, short letter, repeatable. */
export type OptionTable = NonNullable<ParseArgsConfig['options']>

/** The values parsed with an option table, typed by it. */
export type ParsedOptions<Options extends OptionTable> = ReturnType<
  typeof parseArgs<{ options: Options; allowPositionals: true; strict: true }>
>['values']

/** How many positional arguments a command takes, and how its errors name them. */
export interface PositionalCount {
  min: number
  max: number
  /** "one IMAGE", "two images A and B" */
  names: string
}

/**
 * Parse a command's argv strictly (unknown options are errors), turning parseArgs' errors into
 * one clear sentence with the command's name.
 */
export function parseCommandArgs<Options extends OptionTable>(
  command: string,
  argv: string[],
  options: Options,
  positionals: PositionalCount,
): { values: ParsedOptions<Options>; positionals: string[] } {
  let parsed
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true })
  } catch (error) {
    // runCli prefixes "addcow COMMAND: "; keep parseArgs' first sentence ("Unknown option '-x'").
    const text = error instanceof Error ? error.message : String(error)
    const message = (text.split('. ')[0] ?? text).replace(/\.?$/, '')
    const unknown = /^Unknown option '([^']+)'/.exec(message)?.[1]
    const hint = unknown !== undefined ? suggestOption(unknown, options) : undefined
    throw new EngineError(
      'BAD_ARGUMENT',
      `${message}${hint ? `; did you mean '${hint}'?` : '.'} Try 'addcow help ${command}'.`,
      { field: 'option', value: unknown ?? text },
    )
  }
  if (parsed.positionals.length < positionals.min || parsed.positionals.length > positionals.max) {
    const count = parsed.positionals.length
    throw new EngineError(
      'BAD_ARGUMENT',
      `Expected ${positionals.names}; got ${count} argument${count === 1 ? '' : 's'}. Try 'addcow help ${command}'.`,
    )
  }
  return { values: parsed.values, positionals: parsed.positionals }
}

/** Split `addcow COMMAND ... -- EXTRA` into the command's own argv and the pass-through rest. */
export function splitExtraArgs(argv: string[]): { own: string[]; extra: string[] } {
  const at = argv.indexOf('--')
  return at < 0 ? { own: argv, extra: [] } : { own: argv.slice(0, at), extra: argv.slice(at + 1) }
}

/**
 * Spellings other tools use (qemu-img, qemu-io, GNU habits) for an option we spell differently:
 * an unknown option listed here points to ours when the command has it.
 */
const OPTION_ALIASES: Record<string, string> = {
  '--size': 's',
  '--cluster-size': 'c',
  '--cluster_size': 'c',
  '--backing': 'b',
  '--backing-file': 'b',
  '--backing_file': 'b',
  '--backing-format': 'F',
  '--backing_fmt': 'F',
  '--image-file': 'i',
  '--image_file': 'i',
  '--format': 'f',
  '--output-format': 'O',
  '--target-format': 'O',
  '--repair': 'r',
  '--progress': 'p',
  '--force-share': 'U',
  '--unsafe': 'u',
  '--readonly': 'read-only',
  '-j': 'json',
  '-r': 'read-only',
}

/** How the user spells option `name` of a table: `-x` when it has a short letter, else `--name`. */
export function optionSpelling(name: string, table: OptionTable): string {
  const short = table[name]?.short
  return short ? `-${short}` : `--${name}`
}

/**
 * The option of `table` an unknown `spelled` option most likely meant: another tool's
 * spelling of it ({@link OPTION_ALIASES}), or a typo of one of its names.
 */
export function suggestOption(spelled: string, table: OptionTable): string | undefined {
  const alias = OPTION_ALIASES[spelled.split('=')[0]!]
  if (alias !== undefined && alias in table) return optionSpelling(alias, table)
  const spellings = Object.keys(table).flatMap((name) => {
    const short = table[name]?.short
    return short && short !== name ? [`--${name}`, `-${short}`] : [optionSpelling(name, table)]
  })
  if (/^-[^-]$/.test(spelled)) {
    // A short letter in the wrong case (-F for -f) is the only typo a single letter can have.
    return spellings.find((candidate) => candidate.toLowerCase() === spelled.toLowerCase())
  }
  const match = closestMatch(
    spelled.split('=')[0]!,
    spellings.filter((candidate) => candidate.startsWith('--')),
  )
  return match
}

/**
 * `--json`: machine-readable output (qemu-img's key names where it has the same idea);
 * qemu-img's `--output=json` (or `--output json`, `--output=human`) is accepted beside it.
 */
export const JSON_OPTION = { json: { type: 'boolean' }, output: { type: 'string' } } as const

/** Usage text for the `--output` half of {@link JSON_OPTION}. */
export const OUTPUT_USAGE =
  "  --output=json|human  qemu-img's spelling: json is --json, human the text (default)"

/**
 * Fold qemu-img's `--output=json|human` into `--json` (in place), or refuse another value.
 * The runner calls it for every command whose table has {@link JSON_OPTION}.
 */
export function foldOutputOption(values: { json?: boolean; output?: string }): void {
  if (values.output === undefined) return
  if (values.output === 'json') values.json = true
  else if (values.output !== 'human') {
    throw new EngineError(
      'BAD_ARGUMENT',
      `--output takes 'json' or 'human', not '${values.output}'.`,
      { field: 'output', value: values.output },
    )
  } else if (values.json) {
    throw new EngineError('BAD_ARGUMENT', '--json and --output=human contradict each other.', {
      field: 'output',
      value: values.output,
    })
  }
  delete values.output
}

/**
 * Whether an argv asks for JSON output (`--json`, `--output=json`, `--output json`): errors are
 * then printed as a JSON object too, even when the argv does not parse.
 */
export function argvWantsJson(argv: readonly string[]): boolean {
  const end = argv.indexOf('--')
  const own = end < 0 ? argv : argv.slice(0, end)
  return own.some(
    (arg, index) =>
      arg === '--json' ||
      arg === '--output=json' ||
      (arg === '--output' && own[index + 1] === 'json'),
  )
}

/** `-f FMT`: the image's format, instead of probing it. */
export const FORMAT_OPTION = { f: { type: 'string', short: 'f' } } as const

/** `-p`: a progress bar on a terminal. */
export const PROGRESS_OPTION = { p: { type: 'boolean', short: 'p' } } as const

/** Options shared by every command that follows names stored in images. */
export const NAME_POLICY_OPTIONS = {
  'allow-name': { type: 'string', multiple: true },
  'allow-any-name': { type: 'boolean' },
} as const

/** Usage text for {@link NAME_POLICY_OPTIONS}. */
export const NAME_POLICY_USAGE =
  '  --allow-name PATH   follow a name stored in an image that leads to PATH (repeatable)\n' +
  '  --allow-any-name    follow every name stored in images (only for images you trust)'

/** The name policy for this run: the library's trusted pairs plus the run's allowances. */
export async function policyFrom(
  context: { library: Library },
  values: { 'allow-name'?: string[]; 'allow-any-name'?: boolean },
): Promise<NamePolicy> {
  return context.library.policy({
    allowAny: values['allow-any-name'] ?? false,
    allowedPaths: values['allow-name'] ?? [],
  })
}

/** The --accept-base option shared by serve, qemu-cmd and launch. */
export const ACCEPT_BASE_OPTION = { 'accept-base': { type: 'boolean' } } as const

/** Usage text for {@link ACCEPT_BASE_OPTION}. */
export const ACCEPT_BASE_USAGE =
  '  --accept-base        go on although the base changed since the overlay was made,\n' +
  '                       and record its current state as the expected one'

const DOING = { serve: 'serve it', 'qemu-cmd': 'print a command line for it', launch: 'launch it' }

/**
 * The check serve, qemu-cmd and launch run on the opened image before anything uses it: the
 * engine's drift guard ({@link guardBaseDrift}), with --accept-base, and a line on stderr that
 * names the changes when a changed base is accepted.
 */
export function baseDriftCheck(
  context: CommandContext,
  command: keyof typeof DOING,
  acceptBase: boolean,
): (disk: Disk) => Promise<void> {
  return async (disk) => {
    await guardBaseDrift(disk, {
      library: context.library,
      acceptBase,
      doing: DOING[command],
      signal: context.signal,
      onAccepted: (report) =>
        context.stderr.write(
          `addcow ${command}: accepting the changed base ${report.base} (${report.changes.join('; ')}).\n`,
        ),
    })
  }
}

/** The IANA port for NBD. */
export const NBD_PORT = 10809

/** Parse a port number option, or fail naming it. */
export function parsePort(text: string): number {
  const port = Number(text)
  if (!/^\d+$/.test(text) || !Number.isInteger(port) || port > 65535) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `The port '${text}' is not a number between 0 and 65535.`,
      { field: 'port', value: text },
    )
  }
  return port
}

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
  ...FORMAT_OPTION,
} as const

/** Usage text for {@link QEMU_OPTIONS}. */
export const QEMU_USAGE = `  --via nbd|native|raw  nbd: through the NBD export (stock QEMU, default); native:
                       QEMU's add-cow driver; raw: the raw image file of a flattened overlay
  --headless           no window (-display none)
  -m, --memory SIZE    guest memory, e.g. 2G or 512 (MiB) (default 2048)
  --cpus N             virtual CPUs (default 2)
  --machine TYPE       machine type (default q35 on x86)
  --accel auto|kvm|tcg accelerator (default auto: KVM when a test guest runs on it)
  --network user|none  user-mode NAT networking (default) or none
  --display D          QEMU's -display value (default: QEMU's choice)
  --interface virtio|ide  the guest's disk controller (default virtio)
  --binary PATH        the QEMU to run (default qemu-system-ARCH on PATH)
  --read-only          the guest cannot write the disk
  -f FMT               format of IMAGE (default: probed)`

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

/** The parsed {@link QEMU_OPTIONS}. */
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
export function qemuOptionsFrom(values: ParsedOptions<typeof QEMU_OPTIONS>): ParsedQemuOptions {
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
