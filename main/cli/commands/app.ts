import type { Command } from '../context'
import { webCommand } from './web'

/** Commands for web (issue 5). */
export const APP_COMMANDS: Command[] = [webCommand]
