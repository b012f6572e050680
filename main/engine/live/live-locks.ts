import type { Disk } from '../disk'
import { chainLockRequests } from '../ops/chain-lock'
import { changeLockMode, lockFiles, type FileLock, type LockMode } from '../ops/lock'

/**
 * The file locks of a served chain, kept in step with the top a {@link LiveDisk} serves: the
 * top's files exclusively when it is written, every other layer shared (the one rule of
 * `layerLocks`). A live operation that changes the chain calls {@link retarget} with the new
 * top before it swaps: files the new chain adds are locked, files whose mode changes keep their
 * lock and change mode (the old top of a snapshot becomes shared, so qemu-img may read it),
 * files no longer in the chain are unlocked.
 */
export class LiveLocks {
  private readonly held = new Map<string, FileLock>()

  private constructor(private readonly doing: string) {}

  /** Lock the chain of `top` for `doing` ("serve it"); a conflict is BUSY naming the file. */
  static async lock(top: Disk, doing: string): Promise<LiveLocks> {
    const locks = new LiveLocks(doing)
    await locks.retarget(top)
    return locks
  }

  /** The mode each locked file (real path) is held in. */
  modes(): Map<string, LockMode> {
    return new Map([...this.held].map(([path, lock]) => [path, lock.mode]))
  }

  /**
   * Hold exactly the locks the chain of `top` needs. New files are locked first (all or none);
   * then modes change (a conflict there releases what this call took and throws); then files
   * that left the chain are released.
   */
  async retarget(top: Disk): Promise<void> {
    const wanted = await chainRequests(top)
    const locks = await this.lockMissing(wanted)
    const changed: [string, LockMode][] = []
    try {
      for (const [path, mode] of wanted) {
        const lock = this.held.get(path)
        if (!lock || lock.mode === mode) continue
        const before = lock.mode
        this.held.set(path, await changeLockMode(lock, mode, this.doing))
        changed.push([path, before])
      }
    } catch (error) {
      for (const [path, before] of changed.reverse()) {
        const lock = this.held.get(path)!
        this.held.set(path, await changeLockMode(lock, before, this.doing).catch(() => lock))
      }
      for (const lock of locks) await lock.release().catch(() => undefined)
      throw error
    }
    for (const lock of locks) this.held.set(lock.path, lock)
    for (const [path, lock] of [...this.held]) {
      if (wanted.has(path)) continue
      this.held.delete(path)
      await lock.release().catch(() => undefined)
    }
  }

  /**
   * Lock, in the mode the chain of `top` needs, the files of that chain not locked yet, and
   * change nothing else: what a live snapshot does before its pause (the new top's files are
   * nobody's yet), so that the {@link retarget} inside the pause only changes modes.
   */
  async lockAdded(top: Disk): Promise<void> {
    for (const lock of await this.lockMissing(await chainRequests(top)))
      this.held.set(lock.path, lock)
  }

  /** Lock the files of `wanted` not held yet (all or none); the caller records them. */
  private async lockMissing(wanted: Map<string, LockMode>): Promise<FileLock[]> {
    const missing = [...wanted].filter(([path]) => !this.held.has(path))
    const { locks } = await lockFiles(
      missing.map(([path, mode]) => ({ path, mode })),
      this.doing,
    )
    return locks
  }

  /** Release every lock. */
  async release(): Promise<void> {
    for (const lock of [...this.held.values()].reverse())
      await lock.release().catch(() => undefined)
    this.held.clear()
  }
}

/** What the chain of `top` needs locked, by the one rule (top written: exclusive). */
async function chainRequests(top: Disk): Promise<Map<string, LockMode>> {
  const requests = await chainLockRequests(top)
  const wanted = new Map<string, LockMode>()
  for (const { path, mode } of requests) {
    if (wanted.get(path) !== 'exclusive') wanted.set(path, mode)
  }
  return wanted
}
