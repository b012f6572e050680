import type { Command } from '../context'

/** Commands for amend (issue 7). */
export const FORMAT_COMMANDS: Command[] = []
