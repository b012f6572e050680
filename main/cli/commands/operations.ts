import type { Command } from '../context'

/** Commands for check, commit, stream and rebase (issue 3). */
export const OPERATION_COMMANDS: Command[] = []
