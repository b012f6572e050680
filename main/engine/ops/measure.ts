import type { Disk, MeasureResult } from '../disk'
import { EngineError, throwIfAborted } from '../errors'
import type { NamePolicy } from '../names'
import { openImage } from '../open'
import { loadDriver } from '../registry'

/** What `addcow measure` needs: an image (with its chain), or a size alone. */
export interface MeasureOptions {
  /** The image whose guest view would be converted; or give `size`. */
  source?: string
  format?: string
  /** Measure an empty image of this size instead of an image's contents. */
  size?: number
  /** The format the new image would have (a driver with `measure`: raw, qcow2). */
  outputFormat: string
  clusterSize?: number
  policy?: NamePolicy
  signal?: AbortSignal
}

/** Guest bytes asked of block status at once. */
const STATUS_WINDOW = 1024 * 1024 * 1024

/**
 * Bytes of data of `disk`'s guest view in whole units of `granularity`: every unit that a
 * non-zero extent touches counts once (as qemu-img measure counts the clusters a converted
 * image would allocate).
 */
export async function dataBytesOf(
  disk: Disk,
  granularity: number,
  signal?: AbortSignal,
): Promise<number> {
  let units = 0
  let lastCounted = -1
  for (let start = 0; start < disk.size; start += STATUS_WINDOW) {
    throwIfAborted(signal, 'measure')
    const length = Math.min(STATUS_WINDOW, disk.size - start)
    for (const extent of await disk.blockStatus(start, length)) {
      if (extent.zero) continue
      const first = Math.max(Math.floor(extent.offset / granularity), lastCounted + 1)
      const stop = Math.ceil((extent.offset + extent.length) / granularity)
      if (stop > first) {
        units += stop - first
        lastCounted = stop - 1
      }
    }
  }
  return units * granularity
}

/**
 * `measure`: the file sizes a new image of `outputFormat` needs to hold the guest view of
 * `source` (what `convert` would write), or an empty image of `size`, as `qemu-img measure`.
 */
export async function measureImage(
  options: MeasureOptions,
): Promise<MeasureResult & { size: number }> {
  const driver = await loadDriver(options.outputFormat)
  const measure = driver.measure
  if (!measure) {
    throw new EngineError(
      'NOT_CAPABLE',
      `measure does not know ${options.outputFormat} files; it measures raw and qcow2.`,
      { field: 'output format', value: options.outputFormat },
    )
  }
  if ((options.source === undefined) === (options.size === undefined)) {
    throw new EngineError('BAD_ARGUMENT', 'measure takes either an image or a size, not both.', {
      field: 'size',
    })
  }
  const clusterSize = options.clusterSize !== undefined ? { clusterSize: options.clusterSize } : {}
  if (options.size !== undefined) {
    const result = await measure({
      size: options.size,
      ...clusterSize,
      dataBytes: () => Promise.resolve(0),
    })
    return { ...result, size: options.size }
  }
  const disk = await openImage(options.source!, {
    readOnly: true,
    ...(options.format ? { format: options.format } : {}),
    ...(options.policy ? { policy: options.policy } : {}),
  })
  try {
    const result = await measure({
      size: disk.size,
      ...clusterSize,
      dataBytes: (granularity) => dataBytesOf(disk, granularity, options.signal),
    })
    return { ...result, size: disk.size }
  } finally {
    await disk.close()
  }
}
