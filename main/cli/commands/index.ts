import type { Command } from '../context'
import { APP_COMMANDS } from './app'
import { compareCommand } from './compare'
import { createCommand } from './create'
import { FORMAT_COMMANDS } from './formats'
import { infoCommand } from './info'
import { mapCommand } from './map'
import { OPERATION_COMMANDS } from './operations'
import { SERVING_COMMANDS } from './serving'

/** Every `addcow` command, in the order `addcow help` lists them. */
export const COMMANDS: Command[] = [
  createCommand,
  infoCommand,
  mapCommand,
  compareCommand,
  ...OPERATION_COMMANDS,
  ...FORMAT_COMMANDS,
  ...SERVING_COMMANDS,
  ...APP_COMMANDS,
]
