import type { MapExtent } from '../../../shared/image-types'
import type { BlockExtent, Disk, OperationOptions } from '../disk'
import { EngineError, throwIfAborted } from '../errors'

/** Bytes asked of blockStatus at a time: bounds the extents held for one step. */
const MAP_WINDOW = 4 * 1024 ** 3

/** Which part of the map to return, and how much of it. */
export interface MapOptions extends OperationOptions {
  /** Where the map starts (default 0). */
  offset?: number
  /** Bytes to map from `offset` (default: to the end of the disk). */
  length?: number
  /** Most extents returned; the page says where to go on (default: no limit). */
  limit?: number
}

/** One page of a map: its extents, and where the next page starts when it was cut short. */
export interface MapPage {
  extents: MapExtent[]
  truncated: boolean
  /** Where to continue (the start of the first extent left out), or null at the end. */
  nextOffset: number | null
}

/**
 * Throw OUT_OF_RANGE unless [offset, offset + length) lies within the disk: `offset` past the
 * end names the offset, a range running past it names the length.
 */
export function checkMapRange(disk: Disk, offset: number, length: number): void {
  if (offset > disk.size) {
    throw new EngineError(
      'OUT_OF_RANGE',
      `Offset ${offset} is past the end of ${disk.path} (${disk.size} bytes).`,
      { path: disk.path, field: 'offset', value: offset },
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
 * Walk the block status of [offset, offset + length) window by window (each window's extents
 * are asked of the disk at once, so memory stays bounded on a fragmented terabyte disk): the
 * one extent walk that map, the app's map pages and its allocation sums share. `visit` returns
 * false to stop. Cancel is checked and progress reported per window.
 */
export async function forEachExtent(
  disk: Disk,
  offset: number,
  length: number,
  visit: (extent: BlockExtent) => boolean | void,
  options: OperationOptions = {},
): Promise<void> {
  const end = offset + length
  for (let position = offset; position < end; position += MAP_WINDOW) {
    throwIfAborted(options.signal, 'map')
    const window = Math.min(MAP_WINDOW, end - position)
    for (const extent of await disk.blockStatus(position, window)) {
      if (visit(extent) === false) return
    }
    options.onProgress?.(position + window - offset, length)
  }
}

/**
 * `map`, one page: the allocation of [offset, offset + length) in qemu-img map's JSON shape,
 * adjacent alike extents merged, stopping after `limit` extents (`nextOffset` is where the
 * next page starts). The app asks for pages; the CLI for the whole disk ({@link mapImage}).
 */
export async function mapPage(disk: Disk, options: MapOptions = {}): Promise<MapPage> {
  const offset = options.offset ?? 0
  const length = options.length ?? disk.size - offset
  checkMapRange(disk, offset, length)
  const limit = options.limit ?? Number.POSITIVE_INFINITY
  const extents: MapExtent[] = []
  let nextOffset: number | null = null
  await forEachExtent(
    disk,
    offset,
    length,
    (extent) => {
      const last = extents[extents.length - 1]
      if (
        last &&
        last.start + last.length === extent.offset &&
        last.depth === extent.depth &&
        last.present === extent.present &&
        last.zero === extent.zero
      ) {
        last.length += extent.length
        return true
      }
      if (extents.length === limit) {
        nextOffset = extent.offset
        return false
      }
      extents.push({
        start: extent.offset,
        length: extent.length,
        depth: extent.depth,
        present: extent.present,
        zero: extent.zero,
        data: extent.present && !extent.zero,
      })
      return true
    },
    options,
  )
  return { extents, truncated: nextOffset !== null, nextOffset }
}

/**
 * `map`: the allocation of the whole guest view as qemu-img map's JSON shape, from offset 0 to
 * the disk's size, with adjacent alike extents merged.
 */
export async function mapImage(disk: Disk, options: OperationOptions = {}): Promise<MapExtent[]> {
  return (await mapPage(disk, options)).extents
}
