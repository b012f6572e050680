import type { Command } from '../command'

/**
 * Each command's module, loaded on its own when argv names it, so that `addcow info` loads the
 * info command and what it imports, not the NBD server, QEMU or the browser mode (start-up
 * time, issue 15). Help and a command missing here load the whole table (index.ts) instead,
 * so a command added only there still runs, just with the slower start.
 */
export const COMMAND_LOADERS: Readonly<Record<string, () => Promise<Command>>> = {
  create: async () => (await import('./create')).createCommand,
  info: async () => (await import('./info')).infoCommand,
  map: async () => (await import('./map')).mapCommand,
  compare: async () => (await import('./compare')).compareCommand,
  check: async () => (await import('./check')).checkCommand,
  commit: async () => (await import('./commit')).commitCommand,
  stream: async () => (await import('./stream')).streamCommand,
  rebase: async () => (await import('./rebase')).rebaseCommand,
  reset: async () => (await import('./reset')).resetCommand,
  locate: async () => (await import('./locate')).locateCommand,
  convert: async () => (await import('./convert')).convertCommand,
  measure: async () => (await import('./measure')).measureCommand,
  resize: async () => (await import('./resize')).resizeCommand,
  amend: async () => (await import('./amend')).amendCommand,
  serve: async () => (await import('./serve')).serveCommand,
  job: async () => (await import('./job')).jobCommand,
  'qemu-cmd': async () => (await import('./qemu-cmd')).qemuCmdCommand,
  launch: async () => (await import('./launch')).launchCommand,
  machine: async () => (await import('./machine')).machineCommand,
  web: async () => (await import('./web')).webCommand,
  completion: async () => (await import('./completion')).completionCommand,
  man: async () => (await import('./completion')).manCommand,
}
