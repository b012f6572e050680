import type { MapExtent } from '../../shared/image-types'
import type { ResponseOf } from '../../shared/ipc/contract'
import type { Disk } from '../engine/disk'
import { EngineError } from '../engine/errors'
import { chainOf } from '../engine/open'

/** Bytes asked of blockStatus at a time: bounds the extents held for one step. */
const STATUS_WINDOW = 4 * 1024 ** 3

/** The chain's layers as the map channels name them. */
export function layersOf(disk: Disk): { depth: number; path: string; format: string }[] {
  return chainOf(disk).map((layer, depth) => ({ depth, path: layer.path, format: layer.format }))
}

function checkRange(disk: Disk, offset: number, length: number): void {
  if (offset > disk.size) {
    throw new EngineError(
      'OUT_OF_RANGE',
      `Offset ${offset} is past the end of ${disk.path} (${disk.size} bytes).`,
      {
        path: disk.path,
        field: 'offset',
        value: offset,
      },
    )
  }
  if (offset + length > disk.size) {
    throw new EngineError(
      'OUT_OF_RANGE',
      `The range ${offset}+${length} runs past the end of ${disk.path} (${disk.size} bytes).`,
      { path: disk.path, field: 'length', value: length },
    )
  }
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
  const span = length ?? disk.size - offset
  checkRange(disk, offset, span)
  const end = offset + span
  const extents: MapExtent[] = []
  let truncated = false
  let nextOffset: number | null = null
  walk: for (let position = offset; position < end; position += STATUS_WINDOW) {
    const window = Math.min(STATUS_WINDOW, end - position)
    for (const extent of await disk.blockStatus(position, window)) {
      const last = extents[extents.length - 1]
      if (
        last &&
        last.start + last.length === extent.offset &&
        last.depth === extent.depth &&
        last.present === extent.present &&
        last.zero === extent.zero
      ) {
        last.length += extent.length
        continue
      }
      if (extents.length === limit) {
        truncated = true
        nextOffset = extent.offset
        break walk
      }
      extents.push({
        start: extent.offset,
        length: extent.length,
        depth: extent.depth,
        present: extent.present,
        zero: extent.zero,
        data: extent.present && !extent.zero,
      })
    }
  }
  return { virtualSize: disk.size, layers: layersOf(disk), extents, truncated, nextOffset }
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
  checkRange(disk, offset, span)
  const end = offset + span
  const bucketSize = span === 0 ? 0 : Math.ceil(span / bucketCount)
  const count = span === 0 ? 0 : Math.ceil(span / bucketSize)
  const buckets = Array.from({ length: count }, () => ({
    present: new Array<number>(depths).fill(0),
    zero: 0,
  }))
  const totals = { present: new Array<number>(depths).fill(0), zero: 0 }
  for (let position = offset; position < end; position += STATUS_WINDOW) {
    const window = Math.min(STATUS_WINDOW, end - position)
    for (const extent of await disk.blockStatus(position, window)) {
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
    }
  }
  return { virtualSize: disk.size, offset, length: span, bucketSize, layers, buckets, totals }
}
