// Processes as /proc shows them, for tests that check what really runs (a QEMU's argv, an
// export that must be gone), and a poll for a condition with a deadline.
import { readdir, readFile } from 'node:fs/promises'

/** A process: its pid, command name and argv. */
export interface ProcessInfo {
  pid: number
  name: string
  argv: string[]
}

/** The children of a process (from /proc/PID/stat and cmdline). */
export async function childrenOf(parent: number): Promise<ProcessInfo[]> {
  const children: ProcessInfo[] = []
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '')
    // pid (comm) state ppid ...: comm may hold spaces, so read after the last ')'.
    const close = stat.lastIndexOf(')')
    if (Number(stat.slice(close + 2).split(' ')[1]) !== parent) continue
    const cmdline = await readFile(`/proc/${entry}/cmdline`, 'utf8').catch(() => '')
    children.push({
      pid: Number(entry),
      name: stat.slice(stat.indexOf('(') + 1, close),
      argv: cmdline.split('\0').slice(0, -1),
    })
  }
  return children
}

/** Poll `probe` every 100 ms until it returns true, or fail after `ms` naming `what`. */
export async function waitFor(
  what: string,
  probe: () => Promise<boolean>,
  ms = 120_000,
): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
}
