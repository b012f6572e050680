import type { MapExtent } from '../../../shared/image-types'
import type { Disk, OperationOptions } from '../disk'
import { throwIfAborted } from '../errors'

/** Bytes asked of blockStatus at a time. */
const MAP_WINDOW = 64 * 1024 ** 3

/**
 * `map`: the allocation of the whole guest view as qemu-img map's JSON shape, from offset 0 to
 * the disk's size, with adjacent alike extents merged.
 */
export async function mapImage(disk: Disk, options: OperationOptions = {}): Promise<MapExtent[]> {
  const extents: MapExtent[] = []
  for (let offset = 0; offset < disk.size; offset += MAP_WINDOW) {
    throwIfAborted(options.signal, 'map')
    const length = Math.min(MAP_WINDOW, disk.size - offset)
    for (const extent of await disk.blockStatus(offset, length)) {
      const data = extent.present && !extent.zero
      const last = extents[extents.length - 1]
      if (
        last &&
        last.start + last.length === extent.offset &&
        last.depth === extent.depth &&
        last.present === extent.present &&
        last.zero === extent.zero
      ) {
        last.length += extent.length
      } else {
        extents.push({
          start: extent.offset,
          length: extent.length,
          depth: extent.depth,
          present: extent.present,
          zero: extent.zero,
          data,
        })
      }
    }
    options.onProgress?.(offset + length, disk.size)
  }
  return extents
}
