import type { BlockExtent } from '../../disk'
import { EngineError, wrapIoError } from '../../errors'
import { pushExtent } from '../../extents'
import { observeNativeWrite, zeroes, type BlockFile } from '../../file'
import { native } from '../../native/index'

/** Bytes written per request when zeros must be written instead of punching a hole. */
const ZERO_CHUNK = 4 * 1024 * 1024
/** Extents asked of the addon per call. */
const EXTENT_BATCH = 4096
/** Bytes copied per request by the portable (read + write) copy. */
const COPY_CHUNK = 8 * 1024 * 1024

const UNSUPPORTED = new Set(['EOPNOTSUPP', 'ENOTSUP', 'ENOSYS', 'EINVAL', 'EXDEV', 'ETXTBSY'])

function errnoOf(error: unknown): string {
  return String((error as { code?: unknown } | null)?.code ?? '')
}

/**
 * Make [offset, offset + length) of `file` read as zeros, freeing its blocks when the addon and
 * the filesystem can punch holes (on the thread pool), else by writing zeros. Says which it did.
 */
export async function punchOrZero(
  file: BlockFile,
  offset: number,
  length: number,
): Promise<'punched' | 'zeroed'> {
  if (length <= 0) return 'punched'
  const addon = native()
  if (addon?.features.punchHole) {
    try {
      await observeNativeWrite(
        file.path,
        offset,
        // The shared zero buffer: a crash test punching 16 MiB phases allocated each anew.
        () => Promise.resolve(zeroes(length)),
        () => addon.punchHoleAsync(file.fd, offset, length),
      )
      return 'punched'
    } catch (error) {
      if (!UNSUPPORTED.has(errnoOf(error))) {
        throw wrapIoError(error, file.path, `punch a ${length}-byte hole at offset ${offset} in`)
      }
    }
  }
  for (let done = 0; done < length; done += ZERO_CHUNK) {
    await file.writeAt(zeroes(Math.min(ZERO_CHUNK, length - done)), offset + done)
  }
  return 'zeroed'
}

/** Whether data extents of files can be listed (SEEK_DATA / SEEK_HOLE through the addon). */
export function canListDataExtents(): boolean {
  return native()?.features.seekData ?? false
}

/**
 * Call `visit(start, end)` for each data extent of `file` inside [start, end), in order, or
 * return false (without visiting) when extents cannot be listed here. A filesystem without
 * SEEK_DATA reports the whole file as data, which is still correct, only slower to use. A
 * `visit` that returns false stops the walk (which still returns true).
 */
export async function forEachDataExtent(
  file: BlockFile,
  start: number,
  end: number,
  visit: (start: number, end: number) => void | boolean | Promise<void>,
): Promise<boolean> {
  const addon = native()
  if (!addon?.features.seekData) return false
  let position = start
  while (position < end) {
    let flat: number[]
    try {
      flat = addon.dataExtents(file.fd, position, end, EXTENT_BATCH)
    } catch (error) {
      if (UNSUPPORTED.has(errnoOf(error))) return false
      throw wrapIoError(error, file.path, `list the data extents from offset ${position} of`)
    }
    for (let i = 0; i + 1 < flat.length; i += 2) {
      if ((await visit(flat[i]!, flat[i + 1]!)) === false) return true
    }
    if (flat.length < EXTENT_BATCH * 2) break
    const last = flat[flat.length - 1]!
    if (last <= position) {
      throw new EngineError(
        'INTERNAL',
        `The extent walk of ${file.path} did not advance at offset ${position}.`,
        {
          path: file.path,
          offset: position,
        },
      )
    }
    position = last
  }
  return true
}

/** The data extents of `file` inside [start, end), or null when they cannot be listed. */
/**
 * The first data extent of `file` at or after `start` and before `end`, clipped to `end`: an
 * extent, null when [start, end) is all hole, or undefined when the data extents cannot be
 * listed (no addon, or a filesystem without SEEK_DATA). Synchronous: two lseek calls at most.
 */
export function firstDataExtent(
  file: BlockFile,
  start: number,
  end: number,
): [number, number] | null | undefined {
  const addon = native()
  if (!addon?.features.seekData) return undefined
  let flat: number[]
  try {
    flat = addon.dataExtents(file.fd, start, end, 1)
  } catch (error) {
    if (UNSUPPORTED.has(errnoOf(error))) return undefined
    throw wrapIoError(error, file.path, `list the data extents from offset ${start} of`)
  }
  return flat.length >= 2 ? [flat[0]!, flat[1]!] : null
}

export async function dataExtentsIn(
  file: BlockFile,
  start: number,
  end: number,
): Promise<[number, number][] | null> {
  const extents: [number, number][] = []
  const listed = await forEachDataExtent(file, start, end, (from, to) => {
    extents.push([from, to])
  })
  return listed ? extents : null
}

/**
 * Block status of [offset, end) of a file that is a whole guest view (a raw disk, a flattened
 * add-cow's image file), at depth 0: its data extents are data, its holes present and zero
 * (qemu's file driver: a hole reads as zeros and there is nothing below it). Null when the
 * data extents cannot be listed (no addon, or no SEEK_DATA).
 */
export async function fileStatus(
  file: BlockFile,
  offset: number,
  end: number,
): Promise<BlockExtent[] | null> {
  const data = await dataExtentsIn(file, offset, end)
  if (!data) return null
  const extents: BlockExtent[] = []
  const add = (from: number, to: number, zero: boolean): void =>
    pushExtent(extents, { offset: from, length: to - from, depth: 0, present: true, zero })
  let cursor = offset
  for (const [from, to] of data) {
    const start = Math.max(from, offset)
    const stop = Math.min(to, end)
    if (start > cursor) add(cursor, start, true)
    if (stop > start) add(start, stop, false)
    cursor = Math.max(cursor, stop)
  }
  if (end > cursor) add(cursor, end, true)
  return extents
}

/**
 * Copy `length` bytes from `source` at `sourceOffset` to `target` at `targetOffset`: in the
 * kernel (copy_file_range, off the main thread) when the addon is built, else through a buffer.
 * Bytes past the end of `source` are written as zeros.
 */
export async function copyRange(
  source: BlockFile,
  sourceOffset: number,
  target: BlockFile,
  targetOffset: number,
  length: number,
): Promise<void> {
  if (length <= 0) return
  let done = 0
  const addon = native()
  if (addon?.features.copyFileRange) {
    try {
      done = await observeNativeWrite(
        target.path,
        targetOffset,
        async () => {
          const contents = Buffer.alloc(length)
          await source.readAt(contents, sourceOffset)
          return contents
        },
        () => addon.copyFileRange(source.fd, sourceOffset, target.fd, targetOffset, length),
      )
    } catch (error) {
      if (!UNSUPPORTED.has(errnoOf(error))) {
        throw wrapIoError(
          error,
          target.path,
          `copy ${length} bytes from ${source.path} at offset ${sourceOffset} into`,
        )
      }
      done = 0
    }
  }
  if (done >= length) return
  const buffer = Buffer.allocUnsafe(Math.min(COPY_CHUNK, length - done))
  while (done < length) {
    const chunk = buffer.subarray(0, Math.min(COPY_CHUNK, length - done))
    await source.readAt(chunk, sourceOffset + done)
    await target.writeAt(chunk, targetOffset + done)
    done += chunk.length
  }
}
