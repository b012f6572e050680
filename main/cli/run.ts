import { isEngineError } from '../engine/errors'
import { Library } from '../engine/library'
import { COMMANDS } from './commands/index'
import type { CommandContext } from './context'

/** Streams and signal a CLI run uses; tests pass their own. */
export interface CliEnvironment {
  stdout: CommandContext['stdout']
  stderr: CommandContext['stderr']
  signal?: AbortSignal
  library?: Library
}

function help(): string {
  const width = Math.max(...COMMANDS.map((command) => command.name.length))
  return [
    'addcow: copy-on-write overlays of VM disk images in the add-cow format',
    '',
    'Usage: addcow COMMAND [options] ...',
    '',
    ...COMMANDS.map((command) => `  ${command.name.padEnd(width)}  ${command.summary}`),
    '',
    "Run 'addcow help COMMAND' for a command's options.",
    '',
  ].join('\n')
}

/**
 * Run `addcow` with `argv` (without node and the script) and return the exit code. Errors
 * become one sentence on stderr; bugs print their stack too.
 */
export async function runCli(argv: string[], environment: CliEnvironment): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === 'help' || name === '--help' || name === '-h') {
    const topic = name === 'help' ? rest[0] : undefined
    const command = COMMANDS.find((candidate) => candidate.name === topic)
    if (topic !== undefined && !command) {
      environment.stderr.write(`addcow: unknown command '${topic}'.\n`)
      return 1
    }
    environment.stdout.write(command ? `Usage: ${command.usage}\n` : help())
    return name === undefined ? 1 : 0
  }
  if (name === '--version' || name === '-V') {
    environment.stdout.write(`addcow ${process.env.ADDCOW_VERSION ?? '0.1.0'}\n`)
    return 0
  }
  const command = COMMANDS.find((candidate) => candidate.name === name)
  if (!command) {
    environment.stderr.write(`addcow: unknown command '${name}'. Run 'addcow help' for the list.\n`)
    return 1
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    environment.stdout.write(`Usage: ${command.usage}\n`)
    return 0
  }
  try {
    return await command.run({
      argv: rest,
      stdout: environment.stdout,
      stderr: environment.stderr,
      library: environment.library ?? new Library(),
      signal: environment.signal ?? new AbortController().signal,
    })
  } catch (error) {
    if (isEngineError(error)) {
      environment.stderr.write(`addcow ${name}: ${error.message}\n`)
    } else {
      environment.stderr.write(
        `addcow ${name}: internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
      )
    }
    return command.errorExitCode ?? 1
  }
}
