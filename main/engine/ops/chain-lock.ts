import type { Disk } from '../disk'
import { chainOf } from '../open'
import { layerLocks, type LockRequest } from './job'
import { lockFiles } from './lock'

/**
 * Lock every file of an open chain for a long-lived user of it (an NBD export, a VM), by the
 * job mechanism's rule ({@link layerLocks}): the top layer's files exclusively when it is
 * written, shared otherwise, and every layer below shared, so nobody (another addcow, QEMU,
 * qemu-img) writes a file the chain reads. With the native addon these are QEMU's own lock
 * bytes, so QEMU and this engine refuse each other as two QEMUs do. Returns the release
 * function; a conflict is a BUSY error naming the file.
 */
export async function lockDiskChain(disk: Disk, doing: string): Promise<() => Promise<void>> {
  const { release } = await lockFiles(await chainLockRequests(disk), doing)
  return release
}

/** What {@link lockDiskChain} locks for the chain of `top` (a live export keeps it in step). */
export function chainLockRequests(top: Disk): Promise<LockRequest[]> {
  return layerLocks(chainOf(top), (layer, depth) => depth === 0 && !layer.readOnly)
}
