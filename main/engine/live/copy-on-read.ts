import type { Disk } from '../disk'

/** Bytes copied up per piece (whole clusters, at least one), so a long read never holds a large buffer or a long range lock. */
const COPY_PIECE = 1024 * 1024

/** What copy-on-read needs of a live disk: its range locks. */
export interface RangeLocking {
  withRanges<T>(offset: number, length: number, fn: (current: Disk) => Promise<T>): Promise<T>
}

/**
 * Copy-on-read (`serve --copy-on-read`, issue 17 item 4; QEMU's copy-on-read and nbdkit's
 * cow-on-read): after a read, the clusters it touched that the top does not hold yet are
 * copied up into the top, whole, so a slow or remote base warms a local overlay. Each piece is
 * copied under the range lock and only where the top still does not hold it when the lock is
 * taken: a guest write that came first is never overwritten, and one that comes later lands
 * on the copied cluster. The copy writes what the guest already sees, so observers of guest
 * writes are not told. A top that cannot tell which clusters it holds (raw), or holds them all,
 * has nothing to copy.
 */
export async function copyUp(
  live: RangeLocking,
  top: Disk,
  offset: number,
  length: number,
): Promise<void> {
  if (top.readOnly || !top.forEachAllocationRun || top.isAllAllocated?.()) return
  const unit = top.allocationUnit
  const first = Math.floor(offset / unit)
  const end = Math.ceil(Math.min(offset + length, top.size) / unit)
  const piece = Math.max(unit, Math.floor(COPY_PIECE / unit) * unit)
  for (const [runStart, runStop] of unallocatedRuns(top, first, end)) {
    for (let start = runStart * unit; start < runStop * unit; start += piece) {
      const stop = Math.min(start + piece, runStop * unit, top.size)
      await live.withRanges(start, stop - start, (current) => copyPiece(current, start, stop))
    }
  }
}

/** Copy [start, stop) into `current` where it still reads from below (checked under the lock). */
async function copyPiece(current: Disk, start: number, stop: number): Promise<void> {
  if (current.readOnly || !current.forEachAllocationRun) return
  const unit = current.allocationUnit
  for (const [first, end] of unallocatedRuns(current, start / unit, Math.ceil(stop / unit))) {
    const from = first * unit
    const to = Math.min(end * unit, current.size)
    const data = await current.read(from, to - from)
    try {
      await current.write(from, data)
    } catch (error) {
      if (to - from <= unit) throw error
      await copyUnitByUnit(current, data, from, to)
    }
  }
}

/**
 * After a write of several units failed (a full disk, a file size limit), copy them one unit
 * at a time until one fails: a write that failed midway may have put the first units' bytes
 * in the image file without recording them (leaked clusters `check` would report); rewritten
 * one by one, those that fit are recorded, and what fails leaves at most one unit's bytes.
 */
async function copyUnitByUnit(
  current: Disk,
  data: Uint8Array,
  from: number,
  to: number,
): Promise<void> {
  const unit = current.allocationUnit
  for (let start = from; start < to; start += unit) {
    const stop = Math.min(start + unit, to)
    await current.write(start, data.subarray(start - from, stop - from))
  }
}

/** The runs of units in [first, end) that `disk` does not hold. */
function unallocatedRuns(disk: Disk, first: number, end: number): [number, number][] {
  const runs: [number, number][] = []
  disk.forEachAllocationRun!(first, end, (start, stop, allocated) => {
    if (!allocated) runs.push([start, stop])
  })
  return runs
}
