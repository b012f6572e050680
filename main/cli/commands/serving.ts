import type { Command } from '../context'
import { launchCommand } from './launch'
import { qemuCmdCommand } from './qemu-cmd'
import { serveCommand } from './serve'

/** Commands for serve, qemu-cmd and launch (issue 4). */
export const SERVING_COMMANDS: Command[] = [serveCommand, qemuCmdCommand, launchCommand]
