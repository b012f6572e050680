import type { ResponseOf } from '../../shared/ipc/contract'
import type { Disk } from '../engine/disk'
import { chainOf } from '../engine/open'
import { checkMapRange, forEachExtent, mapPage } from '../engine/ops/map'

/** The chain's layers as the map channels name them. */
export function layersOf(disk: Disk): { depth: number; path: string; format: string }[] {
  return chainOf(disk).map((layer, depth) => ({ depth, path: layer.path, format: layer.format }))
}

/**
 * The map of [offset, offset + length) in qemu-img map's shape, stopping after `limit`
 * extents: `nextOffset` is where to continue when `truncated`.
 */
export async function mapRange(
  disk: Disk,
  offset: number,
  length: number | undefined,
  limit: number,
): Promise<ResponseOf<'image:get-map'>> {
  const page = await mapPage(disk, {
    offset,
    ...(length !== undefined ? { length } : {}),
    limit,
  })
  return { virtualSize: disk.size, layers: layersOf(disk), ...page }
}

/**
 * Sum the allocation of [offset, offset + length) (default: the whole disk) into `bucketCount`
 * equal buckets: for each, the bytes that come from each depth and the bytes no layer holds.
 * Costs one pass over the range's extents plus one step per bucket, whatever the disk's size,
 * so a canvas can draw a 1 TiB image, and a zoomed view asks for a finer sum of its range.
 */
export async function allocationBuckets(
  disk: Disk,
  bucketCount: number,
  offset = 0,
  length?: number,
): Promise<ResponseOf<'image:get-allocation'>> {
  const layers = layersOf(disk)
  const depths = layers.length
  const span = length ?? disk.size - offset
  checkMapRange(disk, offset, span)
  const bucketSize = span === 0 ? 0 : Math.ceil(span / bucketCount)
  const count = span === 0 ? 0 : Math.ceil(span / bucketSize)
  const buckets = Array.from({ length: count }, () => ({
    present: new Array<number>(depths).fill(0),
    zero: 0,
  }))
  const totals = { present: new Array<number>(depths).fill(0), zero: 0 }
  await forEachExtent(disk, offset, span, (extent) => {
    const depth = Math.min(extent.depth, depths - 1)
    let start = extent.offset
    const extentEnd = extent.offset + extent.length
    while (start < extentEnd) {
      const index = Math.floor((start - offset) / bucketSize)
      const stop = Math.min(extentEnd, offset + (index + 1) * bucketSize)
      const bucket = buckets[index]!
      if (extent.present) bucket.present[depth]! += stop - start
      else bucket.zero += stop - start
      start = stop
    }
    if (extent.present) totals.present[depth]! += extent.length
    else totals.zero += extent.length
  })
  return { virtualSize: disk.size, offset, length: span, bucketSize, layers, buckets, totals }
}
