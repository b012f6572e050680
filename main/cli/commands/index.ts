import type { Command } from '../command'
import { amendCommand } from './amend'
import { checkCommand } from './check'
import { commitCommand } from './commit'
import { compareCommand } from './compare'
import { completionCommand, manCommand } from './completion'
import { convertCommand } from './convert'
import { createCommand } from './create'
import { infoCommand } from './info'
import { jobCommand } from './job'
import { launchCommand } from './launch'
import { locateCommand } from './locate'
import { machineCommand } from './machine'
import { mapCommand } from './map'
import { measureCommand } from './measure'
import { qemuCmdCommand } from './qemu-cmd'
import { rebaseCommand } from './rebase'
import { resetCommand } from './reset'
import { resizeCommand } from './resize'
import { serveCommand } from './serve'
import { streamCommand } from './stream'
import { webCommand } from './web'

/**
 * The command table: every `addcow` command, in the order `addcow help` lists them. Each is one
 * file of this folder, named after the command, with its help text and its option table.
 */
export const COMMANDS: readonly Command[] = [
  createCommand,
  infoCommand,
  mapCommand,
  compareCommand,
  checkCommand,
  commitCommand,
  streamCommand,
  rebaseCommand,
  resetCommand,
  convertCommand,
  measureCommand,
  resizeCommand,
  locateCommand,
  amendCommand,
  serveCommand,
  jobCommand,
  qemuCmdCommand,
  launchCommand,
  machineCommand,
  webCommand,
  completionCommand,
  manCommand,
]
