import type { Library } from '../engine/library'
import type { NamePolicy } from '../engine/names'

/** What every command gets: its argv (after the command name) and the shared services. */
export interface CommandContext {
  argv: string[]
  stdout: NodeJS.WritableStream & { isTTY?: boolean }
  stderr: NodeJS.WritableStream & { isTTY?: boolean }
  library: Library
  /** Cancelled on SIGINT/SIGTERM. */
  signal: AbortSignal
}

/** One `addcow` sub-command. Returns the process exit code. */
export interface Command {
  name: string
  summary: string
  usage: string
  /** Exit code for errors (default 1; `compare` uses 2 as qemu-img does). */
  errorExitCode?: number
  run(context: CommandContext): Promise<number>
}

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
  context: CommandContext,
  values: { 'allow-name'?: string[]; 'allow-any-name'?: boolean },
): Promise<NamePolicy> {
  return context.library.policy({
    allowAny: values['allow-any-name'] ?? false,
    allowedPaths: values['allow-name'] ?? [],
  })
}
