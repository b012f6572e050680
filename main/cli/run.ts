import { join, resolve } from 'node:path'
import { isEngineError } from '../engine/errors'
import { Library } from '../engine/library'
import {
  cliVersion,
  type Command,
  type CommandContext,
  type InputStream,
  type OutputStream,
} from './command'
import { COMMAND_LOADERS } from './commands/loaders'
import { argvWantsJson, foldOutputOption, parseCommandArgs, splitExtraArgs } from './options'
import { closestMatch } from './suggest'

/**
 * What one run of `addcow` is given. The binary (main.ts) passes the process's own; tests pass
 * sinks, an environment with their own ADDCOW_DATA_DIR and a working directory.
 */
export interface CliIo {
  stdout: OutputStream
  stderr: OutputStream
  /** Read only by `launch` (console input on a terminal); none when absent. */
  readonly stdin?: InputStream | null
  /** Environment variables (default: the process's). ADDCOW_DATA_DIR places the library. */
  env?: Readonly<Record<string, string | undefined>>
  /**
   * The working directory relative paths are resolved against (default: the process's). The
   * engine resolves against the process's, so the run switches to it and back afterwards;
   * runs in flight at once must share one directory.
   */
  cwd?: string
  /** Aborted on SIGINT/SIGTERM: the command stops and leaves its files consistent. */
  signal?: AbortSignal
  /** The library to use instead of the one ADDCOW_DATA_DIR (or the user's data folder) holds. */
  library?: Library
}

/** Every command, in `addcow help`'s order (the whole table: for help and unlisted names). */
async function allCommands(): Promise<readonly Command[]> {
  return (await import('./commands/index')).COMMANDS
}

/** The command called `name`, loading only its own module where it has a loader. */
async function findCommand(name: string | undefined): Promise<Command | undefined> {
  if (name === undefined) return undefined
  const load = Object.hasOwn(COMMAND_LOADERS, name) ? COMMAND_LOADERS[name] : undefined
  if (load) return load()
  return (await allCommands()).find((candidate) => candidate.name === name)
}

/** `addcow help`; the generator loads only then (start-up of the other commands, issue 15). */
async function help(commands: readonly Command[]): Promise<string> {
  return (await import('./docs')).topHelp(commands)
}

/**
 * Run `addcow` with `argv` (without node and the script) in this process, and return the exit
 * code: nothing here exits the process or touches its signal handlers (main.ts does, for the
 * binary). Errors become one sentence on stderr; bugs print their stack too.
 */
export async function runCli(argv: string[], io: CliIo): Promise<number> {
  return inWorkingDirectory(io.cwd, () => dispatch(argv, io))
}

async function dispatch(argv: string[], io: CliIo): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    const topic = name === 'help' ? rest[0] : undefined
    const command = await findCommand(topic)
    if (topic !== undefined && !command) {
      io.stderr.write(`addcow: unknown command '${topic}'.${commandHint(topic)}\n`)
      return 1
    }
    io.stdout.write(command ? `Usage: ${command.usage}\n` : await help(await allCommands()))
    return name === undefined ? 1 : 0
  }
  if (name === '--version' || name === '-V') {
    io.stdout.write(`addcow ${cliVersion()}\n`)
    return 0
  }
  const command = await findCommand(name)
  if (!command) {
    io.stderr.write(
      `addcow: unknown command '${name}'.${commandHint(name)} Run 'addcow help' for the list.\n`,
    )
    return 1
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    io.stdout.write(`Usage: ${command.usage}\n`)
    return 0
  }
  const context = contextFor(io)
  try {
    return await runCommand(command, rest, context)
  } catch (error) {
    if (argvWantsJson(rest)) io.stdout.write(JSON.stringify(jsonError(error), null, 4) + '\n')
    if (isEngineError(error)) {
      io.stderr.write(`addcow ${name}: ${error.message}\n`)
    } else {
      io.stderr.write(
        `addcow ${name}: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      )
    }
    return command.errorExitCode ?? 1
  } finally {
    // A damaged library file was read (and copied aside): say so once, whatever the command.
    const warning = context.library.lastWarning
    if (warning) {
      context.library.lastWarning = null
      io.stderr.write(`addcow: warning: ${warning}\n`)
    }
  }
}

/** " Did you mean 'x'?" when `name` looks like a typo of a command, else nothing. */
function commandHint(name: string): string {
  // The loaders name every command (a unit test holds them to the table).
  const match = closestMatch(name, Object.keys(COMMAND_LOADERS))
  return match ? ` Did you mean '${match}'?` : ''
}

/**
 * An error as the JSON object printed on stdout under `--json`: the stable code, the sentence,
 * and where known the file, field and value at fault. A bug is INTERNAL.
 */
export function jsonError(error: unknown): { error: Record<string, unknown> } {
  if (!isEngineError(error)) {
    return {
      error: {
        code: 'INTERNAL',
        message: error instanceof Error ? error.message : String(error),
      },
    }
  }
  return {
    error: {
      code: error.code,
      message: error.message,
      ...(error.path !== undefined ? { path: error.path } : {}),
      ...(error.field !== undefined ? { field: error.field } : {}),
      ...(error.offset !== undefined ? { offset: error.offset } : {}),
      ...(error.value !== undefined ? { value: error.value } : {}),
    },
  }
}

/** Parse `argv` with the command's option table and run it. */
async function runCommand(
  command: Command,
  argv: string[],
  context: CommandContext,
): Promise<number> {
  const { own, extra } = command.passThrough ? splitExtraArgs(argv) : { own: argv, extra: [] }
  const last = own[own.length - 1]
  if (
    command.negativeLastArgument &&
    last !== undefined &&
    /^-\d/.test(last) &&
    !own.includes('--')
  ) {
    own.splice(own.length - 1, 0, '--')
  }
  const { values, positionals } = parseCommandArgs(
    command.name,
    own,
    command.options,
    command.positionals,
  )
  if ('output' in command.options && 'json' in command.options) {
    foldOutputOption(values as { json?: boolean; output?: string })
  }
  return command.run({ values, positionals, extra }, context)
}

function contextFor(io: CliIo): CommandContext {
  const env = io.env ?? process.env
  return {
    stdout: io.stdout,
    // Read on use, as stdin: the binary's process.stderr is created on first access, and a
    // run that succeeds writes nothing there (start-up, issue 15 item 5).
    get stderr() {
      return io.stderr
    },
    // Read on use: only launch needs it, and the binary's process.stdin is created on access.
    get stdin() {
      return io.stdin ?? null
    },
    env,
    library: io.library ?? libraryFor(env, io.env !== undefined && io.env !== process.env),
    signal: io.signal ?? new AbortController().signal,
  }
}

/**
 * The library file of $ADDCOW_DATA_DIR, else the user's data folder. An injected environment
 * must name its folder: a test's run never falls back to the user's library.
 */
function libraryFor(env: Readonly<Record<string, string | undefined>>, injected: boolean): Library {
  const dataDir = env.ADDCOW_DATA_DIR
  if (dataDir) return new Library(join(resolve(dataDir), 'library.json'))
  if (injected) {
    throw new Error('runCli: an injected env must set ADDCOW_DATA_DIR (or pass a library).')
  }
  return new Library()
}

/** The runs in flight in this process, and the working directory they share. */
const inFlight = { runs: 0, directory: '', previous: '' }

/**
 * Run `work` with the process's working directory at `cwd`, and put it back when the last run
 * in flight ends. A run that asks for another directory while one is in flight is refused:
 * the working directory belongs to the whole process.
 */
async function inWorkingDirectory<T>(cwd: string | undefined, work: () => Promise<T>): Promise<T> {
  const directory = resolve(cwd ?? process.cwd())
  if (inFlight.runs > 0 && directory !== inFlight.directory) {
    throw new Error(
      `runCli: a run in ${inFlight.directory} is in flight; a run in ${directory} must wait for it.`,
    )
  }
  if (inFlight.runs === 0) {
    const previous = process.cwd()
    if (directory !== previous) process.chdir(directory)
    inFlight.directory = directory
    inFlight.previous = previous
  }
  inFlight.runs++
  try {
    return await work()
  } finally {
    inFlight.runs--
    if (inFlight.runs === 0 && process.cwd() !== inFlight.previous) process.chdir(inFlight.previous)
  }
}
