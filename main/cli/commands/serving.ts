import type { Command } from '../context'

/** Commands for serve, qemu-cmd and launch (issue 4). */
export const SERVING_COMMANDS: Command[] = []
