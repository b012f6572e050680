import type { BlockExtent, Disk } from './disk'
import { EngineError } from './errors'

/** Append `extent` to `list`, merging it with the last one when they touch and are alike. */
export function pushExtent(list: BlockExtent[], extent: BlockExtent): void {
  if (extent.length <= 0) return
  const last = list[list.length - 1]
  if (
    last &&
    last.offset + last.length === extent.offset &&
    last.depth === extent.depth &&
    last.present === extent.present &&
    last.zero === extent.zero
  ) {
    last.length += extent.length
  } else {
    list.push({ ...extent })
  }
}

/** Throw OUT_OF_RANGE unless [offset, offset + length) lies within a disk of `size` bytes. */
export function checkRange(path: string, size: number, offset: number, length: number): void {
  if (
    !Number.isSafeInteger(offset) ||
    !Number.isSafeInteger(length) ||
    offset < 0 ||
    length < 0 ||
    offset + length > size
  ) {
    throw new EngineError(
      'OUT_OF_RANGE',
      `Request of ${length} bytes at offset ${offset} is outside ${path} (${size} bytes).`,
      { path, offset, value: length },
    )
  }
}

/** Run `tasks` with at most `limit` in flight; rejects with the first failure. */
export async function runLimited(tasks: (() => Promise<void>)[], limit: number): Promise<void> {
  if (tasks.length === 1) return tasks[0]!()
  let next = 0
  const workers: Promise<void>[] = []
  for (let i = 0; i < Math.min(limit, tasks.length); i++) {
    workers.push(
      (async () => {
        while (next < tasks.length) {
          const task = tasks[next++]!
          await task()
        }
      })(),
    )
  }
  await Promise.all(workers)
}

/**
 * Split [position, position + target.length) into pieces of at most `piece` bytes and read them
 * with `read`, at most `limit` at once: large reads from the page cache go faster when their
 * copies spread over the thread pool.
 */
export async function readInPieces(
  target: Uint8Array,
  position: number,
  piece: number,
  limit: number,
  read: (part: Uint8Array, at: number) => Promise<void>,
): Promise<void> {
  if (target.length <= piece) return read(target, position)
  const tasks: (() => Promise<void>)[] = []
  for (let start = 0; start < target.length; start += piece) {
    const part = target.subarray(start, Math.min(target.length, start + piece))
    tasks.push(() => read(part, position + start))
  }
  await runLimited(tasks, limit)
}

/**
 * Read [offset, offset + target.length) of what lies under an overlay layer: its backing disk,
 * and zeros past the backing disk's end or when there is none. Every overlay format (add-cow,
 * qcow2, cow, the drafts) reads its unallocated ranges through this.
 */
export async function readBelow(
  backing: Disk | null,
  target: Uint8Array,
  offset: number,
): Promise<void> {
  const available = backing ? Math.max(0, Math.min(target.length, backing.size - offset)) : 0
  if (available > 0 && backing) await backing.readInto(target.subarray(0, available), offset)
  if (available < target.length) target.fill(0, available)
}

/**
 * Append the block status of [start, finish) as seen through an overlay layer's unallocated
 * range: the backing disk's extents one level deeper, and past its end (or without one) an
 * absent range that reads as zeros at this layer's depth, as qemu-img map reports it.
 */
export async function pushStatusBelow(
  extents: BlockExtent[],
  backing: Disk | null,
  start: number,
  finish: number,
): Promise<void> {
  const inside = backing ? Math.min(finish, backing.size) : start
  if (backing && inside > start) {
    for (const extent of await backing.blockStatus(start, inside - start)) {
      pushExtent(extents, { ...extent, depth: extent.depth + 1 })
    }
  }
  const from = Math.max(start, inside)
  if (finish > from) {
    pushExtent(extents, {
      offset: from,
      length: finish - from,
      depth: 0,
      present: false,
      zero: true,
    })
  }
}

/**
 * A queue that runs tasks one after another, in the order given: for drivers whose writes
 * and flushes change shared metadata (qcow2, the bitmap overlays). A failed task does not stop
 * the ones after it.
 */
export function serialQueue(): <T>(task: () => Promise<T>) => Promise<T> {
  let tail: Promise<void> = Promise.resolve()
  return (task) => {
    const run = tail.then(task)
    tail = run.then(
      () => undefined,
      () => undefined,
    )
    return run
  }
}

/**
 * The block status of an overlay layer from its allocation runs ([start, end) bytes, in
 * order): an allocated run is this layer's data (depth 0), the others what lies below it.
 */
export async function overlayStatus(
  backing: Disk | null,
  runs: readonly [number, number, boolean][],
): Promise<BlockExtent[]> {
  const extents: BlockExtent[] = []
  for (const [start, end, allocated] of runs) {
    if (allocated) {
      pushExtent(extents, {
        offset: start,
        length: end - start,
        depth: 0,
        present: true,
        zero: false,
      })
    } else {
      await pushStatusBelow(extents, backing, start, end)
    }
  }
  return extents
}
