import { open, readFile, rm } from 'node:fs/promises'
import { EngineError, wrapIoError } from '../errors'
import { BlockFile } from '../file'
import { native } from '../native/index'
import { processAlive } from '../processes'

/**
 * How an operation uses a file. `shared`: it reads and forbids writers (what QEMU does with a
 * read-only image). `exclusive`: it writes and shares nothing (commit's base, repairs).
 */
export type LockMode = 'shared' | 'exclusive'

/** A held lock; release it exactly once. */
export interface FileLock {
  readonly path: string
  readonly mode: LockMode
  /** 'qemu-ofd': QEMU's own lock bytes (QEMU and qemu-img see it); 'flock'; 'lock-file'. */
  readonly kind: 'qemu-ofd' | 'flock' | 'lock-file'
  release(): Promise<void>
}

/** A lock of QEMU's bytes, whose mode can change while it is held ({@link changeLockMode}). */
interface ModalFileLock extends FileLock {
  mode: LockMode
  setMode(mode: LockMode, doing: string): void
}

// QEMU's permission bits (block.h): consistent read, write, write unchanged, resize.
const PERM_READ = 1
const PERM_WRITE = 2
const PERM_RESIZE = 8
const PERM_ALL = 15

function busy(path: string, why: string, doing: string): EngineError {
  return new EngineError(
    'BUSY',
    `${path} is in use by another process (${why}); close it (a VM, qemu-nbd, addcow serve) before you ${doing}.`,
    { path },
  )
}

async function lockFileOwner(lockPath: string): Promise<number | null> {
  try {
    const text = await readFile(lockPath, 'utf8')
    const pid = Number.parseInt(text.trim(), 10)
    return processAlive(pid) ? pid : null
  } catch {
    return null
  }
}

/** Portable fallback without the addon: `<file>.addcow-lock` holding the owner's pid. */
async function lockWithFile(path: string, mode: LockMode, doing: string): Promise<FileLock> {
  const lockPath = `${path}.addcow-lock`
  for (let attempt = 0; attempt < 3; attempt++) {
    const owner = await lockFileOwner(lockPath)
    if (owner !== null && owner !== process.pid) {
      throw busy(path, `process ${owner} holds ${lockPath}`, doing)
    }
    if (mode === 'shared') {
      return { path, mode, kind: 'lock-file', release: async () => undefined }
    }
    try {
      const handle = await open(lockPath, 'wx', 0o644)
      await handle.writeFile(String(process.pid))
      await handle.close()
      let released = false
      return {
        path,
        mode,
        kind: 'lock-file',
        release: async () => {
          if (released) return
          released = true
          await rm(lockPath, { force: true })
        },
      }
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST')
        throw wrapIoError(error, lockPath, 'create the lock file')
      // A stale lock file (its owner is gone): remove it and try again.
      if ((await lockFileOwner(lockPath)) === null) await rm(lockPath, { force: true })
    }
  }
  throw busy(path, `${lockPath} keeps reappearing`, doing)
}

/**
 * Lock `path` for an operation. With the addon this takes QEMU's own lock bytes (open file
 * description locks on bytes 100+ and 200+), so a running QEMU, qemu-nbd or qemu-img and this
 * engine refuse each other exactly as two QEMUs do. Without it, a `<file>.addcow-lock` file
 * (seen only by this tool) stands in. A conflict is a BUSY error naming the file.
 */
export async function lockFile(path: string, mode: LockMode, doing: string): Promise<FileLock> {
  const addon = native()
  if (!addon?.features.lock) return lockWithFile(path, mode, doing)
  const file = await BlockFile.open(path, false)
  try {
    takeQemuLock(file.fd, path, mode, doing)
  } catch (error) {
    await file.close().catch(() => undefined)
    throw error
  }
  let released = false
  const lock: ModalFileLock = {
    path,
    mode,
    kind: addon.features.lockKind,
    release: async () => {
      if (released) return
      released = true
      // Closing the file description drops its locks.
      await file.close()
    },
    setMode(next, doing) {
      // Drop this description's lock bytes and take the new ones in the same tick; if the new
      // mode conflicts, the old one is taken back (it held a moment ago, so nobody conflicts).
      addon.unlock(file.fd)
      try {
        takeQemuLock(file.fd, path, next, doing)
        lock.mode = next
      } catch (error) {
        takeQemuLock(file.fd, path, lock.mode, doing)
        throw error
      }
    },
  }
  return lock
}

/** Take QEMU's lock bytes for `mode` on `fd`; BUSY naming `path` on a conflict. */
function takeQemuLock(fd: number, path: string, mode: LockMode, doing: string): void {
  const addon = native()!
  const held = mode === 'exclusive' ? PERM_READ | PERM_WRITE | PERM_RESIZE : PERM_READ
  const unshared = mode === 'exclusive' ? PERM_ALL : PERM_WRITE | PERM_RESIZE
  let conflict: string | null
  try {
    conflict = addon.lock(fd, held, unshared)
  } catch (error) {
    throw wrapIoError(error, path, 'lock')
  }
  if (conflict !== null)
    throw busy(path, `another process holds or forbids the "${conflict}" permission`, doing)
}

/**
 * Change a held lock's mode (a live snapshot's frozen layer goes from exclusive to shared, a
 * live commit's base the other way), keeping the file locked: QEMU's lock bytes are retaken on
 * the same file description; the lock file of the fallback is taken or removed. Returns the lock
 * to keep (the same object, or its replacement).
 */
export async function changeLockMode(
  lock: FileLock,
  mode: LockMode,
  doing: string,
): Promise<FileLock> {
  if (lock.mode === mode) return lock
  const modal = lock as Partial<ModalFileLock>
  if (modal.setMode) {
    modal.setMode(mode, doing)
    return lock
  }
  // The lock-file fallback: a shared lock is no file, an exclusive one is the file.
  const next = await lockWithFile(lock.path, mode, doing)
  if (mode === 'shared') await lock.release()
  return next
}

/** Lock several files (all or none); the result releases them all. */
export async function lockFiles(
  requests: { path: string; mode: LockMode }[],
  doing: string,
): Promise<{ locks: FileLock[]; release: () => Promise<void> }> {
  const locks: FileLock[] = []
  const release = async (): Promise<void> => {
    for (const lock of locks.splice(0).reverse()) await lock.release().catch(() => undefined)
  }
  try {
    const seen = new Set<string>()
    for (const request of requests) {
      if (seen.has(request.path)) continue
      seen.add(request.path)
      locks.push(await lockFile(request.path, request.mode, doing))
    }
  } catch (error) {
    await release()
    throw error
  }
  return { locks, release }
}
