import type { ResponseOf } from '../../shared/ipc/contract'
import type { Disk } from '../engine/disk'
import { chainOf } from '../engine/open'
import { mapPage, nextWrittenRange, sumAllocation } from '../engine/ops/map'

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
 * equal buckets: for each, the bytes of data that come from each depth and the bytes that read
 * as zeros (unallocated, or holes in a layer). The engine's {@link sumAllocation} asks an
 * overlay's allocation summary once per bucket, so a canvas can draw a 1 TiB image, and a
 * zoomed view asks for a finer sum of its range, at about the same cost.
 */
export async function allocationBuckets(
  disk: Disk,
  bucketCount: number,
  offset = 0,
  length?: number,
): Promise<ResponseOf<'image:get-allocation'>> {
  const layers = layersOf(disk)
  const span = length ?? disk.size - offset
  const sums = await sumAllocation(disk, layers.length, bucketCount, offset, span)
  return {
    virtualSize: disk.size,
    clusterSize: disk.allocationUnit > 1 ? disk.allocationUnit : null,
    offset,
    length: span,
    bucketSize: sums.binSize,
    layers,
    buckets: sums.bins,
    totals: sums.totals,
  }
}

/** The next range of data the image itself holds at or after `offset` (the map's "next written"). */
export async function findWritten(
  disk: Disk,
  offset: number,
): Promise<ResponseOf<'image:find-written'>> {
  const range = await nextWrittenRange(disk, offset)
  return { virtualSize: disk.size, range: range ? { start: range[0], end: range[1] } : null }
}
