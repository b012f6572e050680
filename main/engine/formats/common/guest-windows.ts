import type { Disk, OperationOptions } from '../../disk'
import { throwIfAborted } from '../../errors'

/** Guest bytes read per window when a whole guest view is copied out (convert). */
export const GUEST_WINDOW_BYTES = 16 * 1024 * 1024

/**
 * Visit the guest view of `source` window by window, for a writer that copies it into a new
 * standalone image (convert). Each window is `windowBytes` long (a multiple of `unit`; the last
 * one is clamped to the disk's size); windows that read as zeros everywhere (block status) are
 * reported with no data and never read; the others are read whole into `data` (bytes past the
 * disk's end are zero), with `zero(start, end)` telling which units within are known zeros.
 * The signal is checked before every window; progress counts guest bytes.
 */
export async function forEachGuestWindow(
  source: Disk,
  options: OperationOptions & { windowBytes?: number; unit: number; operation: string },
  visit: (window: {
    start: number
    length: number
    data: Buffer | null
    /** Whether unit `index` of the window (unit-sized pieces) holds only known zeros. */
    knownZero: (index: number) => boolean
  }) => Promise<void>,
): Promise<void> {
  const unit = options.unit
  const windowBytes = Math.max(
    unit,
    Math.floor((options.windowBytes ?? GUEST_WINDOW_BYTES) / unit) * unit,
  )
  // Two buffers: the next window is read while the writer handles the current one.
  const buffers = [Buffer.alloc(windowBytes), Buffer.alloc(windowBytes)]
  const load = async (start: number, buffer: Buffer) => {
    throwIfAborted(options.signal, options.operation)
    const length = Math.min(windowBytes, source.size - start)
    const extents = await source.blockStatus(start, length)
    const zeroUnits = new Uint8Array(Math.ceil(length / unit)).fill(1)
    let anyData = false
    for (const extent of extents) {
      if (extent.zero) continue
      anyData = true
      const first = Math.floor((extent.offset - start) / unit)
      const stop = Math.ceil((extent.offset + extent.length - start) / unit)
      zeroUnits.fill(0, first, stop)
    }
    let data: Buffer | null = null
    if (anyData) {
      data = buffer.subarray(0, Math.ceil(length / unit) * unit)
      data.fill(0, length)
      await source.readInto(data.subarray(0, length), start)
    }
    return { start, length, data, knownZero: (index: number) => zeroUnits[index] === 1 }
  }
  let next: ReturnType<typeof load> | null = source.size > 0 ? load(0, buffers[0]!) : null
  for (let index = 0; next; index++) {
    const window = await next
    const following = window.start + windowBytes
    next = following < source.size ? load(following, buffers[(index + 1) % 2]!) : null
    // A failed read ahead is reported when its turn comes, not while this window is written.
    next?.catch(() => undefined)
    await visit(window)
    options.onProgress?.(window.start + window.length, source.size)
  }
}

/** Zeros to compare against (memcmp in Buffer.equals, not a byte loop). */
const ZEROS = Buffer.alloc(1024 * 1024)

/** Whether `data` holds only zero bytes. */
export function isAllZero(data: Uint8Array): boolean {
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  for (let at = 0; at < bytes.length; at += ZEROS.length) {
    const piece = bytes.subarray(at, at + ZEROS.length)
    if (!piece.equals(ZEROS.subarray(0, piece.length))) return false
  }
  return true
}
