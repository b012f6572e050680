import type { Command } from '../context'
import { amendCommand } from './amend'

/** Commands for amend (issue 7). */
export const FORMAT_COMMANDS: Command[] = [amendCommand]
