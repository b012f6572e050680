import type { Command } from '../context'

/** Commands for web (issue 5). */
export const APP_COMMANDS: Command[] = []
