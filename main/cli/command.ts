import type { Library } from '../engine/library'
import type { OptionTable, ParsedOptions, PositionalCount } from './options'

/** A stream a command writes to: stdout or stderr, a terminal or a pipe (or a test's sink). */
export type OutputStream = NodeJS.WritableStream & { isTTY?: boolean; columns?: number }

/** The terminal `launch` forwards to the guest's serial console. */
export type InputStream = NodeJS.ReadableStream & { isTTY?: boolean }

/** What every command gets besides its arguments: the run's streams, environment and services. */
export interface CommandContext {
  stdout: OutputStream
  stderr: OutputStream
  /** The run's standard input, or null when it has none (an in-process run). */
  stdin: InputStream | null
  /** The run's environment variables (the process's, or a test's). */
  env: Readonly<Record<string, string | undefined>>
  library: Library
  /** Cancelled on SIGINT/SIGTERM. */
  signal: AbortSignal
}

/** A command's argv after parsing with its option table. */
export interface CommandArgs<Options extends OptionTable> {
  values: ParsedOptions<Options>
  positionals: string[]
  /** The arguments after `--`, as given (commands with `passThrough` only). */
  extra: string[]
}

/**
 * One `addcow` sub-command: its name, help, option table and positional count, and what it
 * does with the parsed arguments. The runner parses argv (run.ts), so a command never sees an
 * unknown option; it returns the exit code and never exits the process itself.
 */
export interface CommandSpec<Options extends OptionTable> {
  name: string
  summary: string
  /** What `addcow help NAME` and `addcow NAME --help` print after "Usage: ". */
  usage: string
  options: Options
  positionals: PositionalCount
  /** Arguments after `--` are not parsed but handed over as `extra` (qemu-cmd, launch). */
  passThrough?: boolean
  /**
   * The last argument may be a negative number (`resize IMAGE -1G`, as qemu-img resize): it is
   * taken as a positional, not as an option.
   */
  negativeLastArgument?: boolean
  /** Exit code for errors (default 1; `compare` uses 2 as qemu-img does). */
  errorExitCode?: number
  run(args: CommandArgs<Options>, context: CommandContext): Promise<number>
}

/** A command of the table, its option types erased. */
export type Command = CommandSpec<OptionTable>

/** Declare a command: its `run` gets values typed by its own option table. */
export function defineCommand<Options extends OptionTable>(spec: CommandSpec<Options>): Command {
  return spec as unknown as Command
}

/** The version `addcow --version` prints (package.json's, set when the bundle is built). */
export function cliVersion(): string {
  return process.env.ADDCOW_VERSION ?? '0.1.0'
}

/** Resolves when the run is cancelled (SIGINT/SIGTERM in the binary). */
export function untilCancelled(signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve()
  return new Promise((resolve) => signal.addEventListener('abort', () => resolve(), { once: true }))
}
