import type { Disk, OperationOptions } from '../disk'
import { assertAbilities } from '../disk'
import { EngineError, throwIfAborted } from '../errors'
import type { Library } from '../library'
import type { NamePolicy } from '../names'
import { formatSize } from '../units'
import { runOverlayJob } from './job'

/** What `addcow resize` needs. */
export interface ResizeOptions extends OperationOptions {
  path: string
  format?: string
  /** The new virtual size in bytes, or a change of it (`delta`). */
  size: { absolute: number } | { delta: number }
  /** Allow a smaller size (qemu-img resize --shrink); refused anyway when data would be lost. */
  shrink?: boolean
  policy?: NamePolicy
  library?: Library
  acceptBase?: boolean
}

/** What a resize did. */
export interface ResizeResult {
  path: string
  oldSize: number
  newSize: number
  /** Bytes of the new area marked as the overlay's own (zeros), so the base's tail stays hidden. */
  hiddenBaseBytes: number
}

/** Bytes read at once when checking that a cut-off tail reads as zeros. */
const CHECK_BYTES = 4 * 1024 * 1024

/** The first offset in [from, to) of `disk`'s guest view that is not zero, or null. */
async function firstNonZero(
  disk: Disk,
  from: number,
  to: number,
  signal?: AbortSignal,
): Promise<number | null> {
  for (const extent of await disk.blockStatus(from, to - from)) {
    if (extent.zero) continue
    for (let at = extent.offset; at < extent.offset + extent.length; at += CHECK_BYTES) {
      throwIfAborted(signal, 'resize')
      const data = await disk.read(at, Math.min(CHECK_BYTES, extent.offset + extent.length - at))
      const index = data.findIndex((byte) => byte !== 0)
      if (index >= 0) return at + index
    }
  }
  return null
}

/**
 * `resize`: change an image's virtual size, as `qemu-img resize` does.
 *
 * Growing grows the files (an add-cow overlay: its image file and its bitmap); when the base is
 * longer than the old size, the new area is written as zeros in the overlay (whole clusters are
 * only marked), so the guest sees zeros there and not the base's tail, as qemu-img resize does
 * for qcow2 overlays. Shrinking needs `shrink` and is refused when the part cut off holds any
 * non-zero byte: nothing the guest wrote is ever lost. The image's files are locked exclusively,
 * its base shared.
 */
export async function resizeImage(options: ResizeOptions): Promise<ResizeResult> {
  return runOverlayJob(
    'resize',
    {
      ...options,
      needs: [],
      doing: 'resize it',
      ...(options.library
        ? {
            drift: {
              library: options.library,
              accept: options.acceptBase ?? false,
              doing: 'resize it',
            },
          }
        : {}),
    },
    async (job) => {
      const disk = job.disk
      const oldSize = disk.size
      const newSize =
        'absolute' in options.size ? options.size.absolute : oldSize + options.size.delta
      if (!Number.isSafeInteger(newSize) || newSize < 0) {
        throw new EngineError(
          'BAD_ARGUMENT',
          `${disk.path}: the new size ${newSize} is not a size (the image has ${oldSize} bytes).`,
          { path: disk.path, field: 'size', value: newSize },
        )
      }
      const result: ResizeResult = { path: disk.path, oldSize, newSize, hiddenBaseBytes: 0 }
      if (newSize === oldSize) return result
      await job.lockChain()
      if (newSize > oldSize) {
        assertAbilities(disk, ['growAndClose'], 'resize')
        const baseSize = disk.backing?.size ?? 0
        job.release(disk)
        await disk.growAndClose!(newSize)
        if (baseSize > oldSize) {
          const grown = await job.reopen()
          result.hiddenBaseBytes = Math.min(newSize, baseSize) - oldSize
          await grown.writeZeroes(oldSize, result.hiddenBaseBytes)
          await grown.flush()
        }
        return result
      }
      if (!options.shrink) {
        throw new EngineError(
          'BAD_ARGUMENT',
          `${disk.path} has ${oldSize} bytes (${formatSize(oldSize)}); ${newSize} would shrink it. Pass --shrink (as qemu-img resize) to cut it; it is refused if the part cut off holds data.`,
          { path: disk.path, field: 'size', value: newSize },
        )
      }
      assertAbilities(disk, ['shrinkAndClose'], 'resize --shrink')
      const data = await firstNonZero(disk, newSize, oldSize, options.signal)
      if (data !== null) {
        throw new EngineError(
          'BAD_ARGUMENT',
          `Refusing to shrink ${disk.path} to ${newSize} bytes: its guest view holds data at offset ${data}, which would be lost.`,
          { path: disk.path, field: 'size', offset: data, value: newSize },
        )
      }
      job.release(disk)
      await disk.shrinkAndClose!(newSize)
      return result
    },
  )
}
