import { readFileSync } from 'node:fs'

/**
 * Whether a process recorded earlier still runs. A pid alone does not say: once the process
 * exits the kernel gives its number to the next process, so a record that outlives a crash
 * would see "its" process run again. Where /proc tells (Linux), a record also keeps the
 * process's {@link processIdentity}: the boot it ran in and its start time, which no later
 * process with the same pid shares.
 */

/** Whether a process with this pid exists now (EPERM: it does, under another user). */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * What tells process `pid` from any other that had or will have its pid: "BOOT-ID/START" (the
 * kernel's boot id and the process's start time in clock ticks since boot, /proc/PID/stat
 * field 22). Null where /proc does not say (another system, no such process).
 */
export function processIdentity(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the command name (which may hold spaces and parentheses): state is field 3.
    const start = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
    const boot = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim()
    return start && /^\d+$/.test(start) && boot ? `${boot}/${start}` : null
  } catch {
    return null
  }
}

/**
 * Whether the process recorded as `pid` (with `identity`, when the record has one) still runs.
 * When its identity cannot be read now the pid decides, as for a record without one.
 */
export function recordedProcessRuns(pid: number, identity?: string): boolean {
  if (!processAlive(pid)) return false
  if (identity === undefined) return true
  const now = processIdentity(pid)
  return now === null || now === identity
}
