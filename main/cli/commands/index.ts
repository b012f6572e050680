import type { Command } from '../context'
import { compareCommand } from './compare'
import { createCommand } from './create'
import { infoCommand } from './info'
import { mapCommand } from './map'

/** Every `addcow` command, in the order `addcow help` lists them. */
export const COMMANDS: Command[] = [createCommand, infoCommand, mapCommand, compareCommand]
