import type { Command } from '../context'
import { checkCommand } from './check'
import { commitCommand } from './commit'
import { rebaseCommand } from './rebase'
import { streamCommand } from './stream'

/** Commands for check, commit, stream and rebase (issue 3). */
export const OPERATION_COMMANDS: Command[] = [
  checkCommand,
  commitCommand,
  streamCommand,
  rebaseCommand,
]
