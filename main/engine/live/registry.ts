import type { z } from 'zod'
import { EngineError, quote } from '../errors'
import type { Library } from '../library'
import type { NamePolicy } from '../names'
import type { LiveJobTable } from './jobs'
import type { LiveDisk } from './live-disk'
import type { LiveLocks } from './live-locks'

/**
 * What a live command works on: the export's disk (quiesce, swap, range locks), the locks of
 * its chain, its jobs, and how it was opened. `addcow serve`/`launch` build one from their
 * ExportHandle; the app builds one for a machine it runs.
 */
export interface LiveTarget {
  live: LiveDisk
  locks: LiveLocks
  jobs: LiveJobTable
  /** The name policy the chain was opened with (a reopened layer uses it too). */
  policy?: NamePolicy
  /** The NBD URI clients connect to. */
  uri?: string
  /** Whether reads copy what they find below the top into it (`serve --copy-on-read`). */
  copyOnRead?: boolean
  /**
   * The library a live snapshot records its new top in (as `addcow create` does: the image,
   * its trusted names, the frozen layer's fingerprint for the drift guard), and a live commit
   * asks who else reads through the base (the blast radius) and keeps fingerprints in.
   */
  library?: Library
}

/** A command's handler: arguments already checked by its schema; the value is the reply. */
export type LiveCommandHandler<Args> = (args: Args, target: LiveTarget) => Promise<unknown>

interface LiveCommand {
  schema: z.ZodType
  handler: LiveCommandHandler<unknown>
}

const COMMANDS = new Map<string, LiveCommand>()

/**
 * Add a command to every control socket: `name` as clients send it, the zod schema of its
 * arguments (an object; a strict one refuses unknown keys), and its handler. The built-in
 * commands (status, jobs, job-status, job-cancel, snapshot) are registered by commands.ts;
 * another module registers its own and is imported there, so every socket knows it.
 */
export function registerLiveCommand<Schema extends z.ZodType>(
  name: string,
  schema: Schema,
  handler: LiveCommandHandler<z.infer<Schema>>,
): void {
  if (COMMANDS.has(name))
    throw new EngineError('INTERNAL', `The live command ${quote(name)} is registered twice.`)
  COMMANDS.set(name, { schema, handler: handler as LiveCommandHandler<unknown> })
}

/** The names of the registered commands, sorted. */
export function liveCommandNames(): string[] {
  return [...COMMANDS.keys()].sort()
}

/**
 * Run the command `name` with raw `args` on `target`: unknown commands and arguments its
 * schema refuses are BAD_ARGUMENT naming the command, the field and the problem.
 */
export async function runLiveCommand(
  name: string,
  args: unknown,
  target: LiveTarget,
): Promise<unknown> {
  const command = COMMANDS.get(name)
  if (!command) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `Unknown live command ${quote(name)}; known: ${liveCommandNames().join(', ')}.`,
      { field: 'command', value: name },
    )
  }
  const parsed = command.schema.safeParse(args)
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!
    const field = issue.path.join('.') || 'args'
    throw new EngineError(
      'BAD_ARGUMENT',
      `The ${name} command's ${field === 'args' ? 'arguments are' : `argument ${quote(field)} is`} invalid: ${issue.message}.`,
      { field },
    )
  }
  return command.handler(parsed.data, target)
}
