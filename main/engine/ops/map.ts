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

/** Bytes of one bin of {@link sumAllocation}: data per depth, and what reads as zeros. */
export interface AllocationBin {
  /** `present[d]`: bytes whose data comes from depth d (holes excluded: they are zeros). */
  present: number[]
  /** Bytes that read as zeros: no layer holds them, or a layer holds them as a hole. */
  zero: number
}

/** The allocation of a range summed into equal bins ({@link sumAllocation}). */
export interface AllocationSums {
  /** Bytes per bin (the last may be shorter); bin i starts at offset + i * binSize. */
  binSize: number
  bins: AllocationBin[]
  totals: AllocationBin & {
    /** `holes[d]`: bytes depth d holds as holes (present, reading as zeros); part of `zero`. */
    holes: number[]
  }
}

/**
 * Sum the allocation of [offset, offset + length) into `binCount` equal bins: for each, the
 * bytes of data each depth of the chain provides and the bytes that read as zeros, as
 * `qemu-img map` tells them apart: a hole in a layer (a sparse raw base) is zeros, not data.
 *
 * A layer that keeps an allocation summary ({@link Disk.countAllocated}: add-cow's bitmap
 * counts) is asked once per bin: a bin it holds wholly is its data, a bin it holds none of
 * goes down the chain (runs of such bins in one request), and only a bin it holds in part is
 * walked extent by extent. So a 1 TiB overlay costs about one step per bin and per layer,
 * however its written clusters are spread. Other layers are walked with {@link forEachExtent}.
 */
export async function sumAllocation(
  disk: Disk,
  depths: number,
  binCount: number,
  offset = 0,
  length = disk.size - offset,
  options: OperationOptions = {},
): Promise<AllocationSums> {
  checkMapRange(disk, offset, length)
  const binSize = length === 0 ? 0 : Math.ceil(length / Math.max(1, binCount))
  const count = length === 0 ? 0 : Math.ceil(length / binSize)
  const bins: AllocationBin[] = Array.from({ length: count }, () => ({
    present: new Array<number>(depths).fill(0),
    zero: 0,
  }))
  const totals = {
    present: new Array<number>(depths).fill(0),
    zero: 0,
    holes: new Array<number>(depths).fill(0),
  }
  const add = (start: number, end: number, depth: number, kind: 'data' | 'hole' | 'none') => {
    const layer = Math.min(depth, depths - 1)
    if (kind === 'data') totals.present[layer]! += end - start
    else totals.zero += end - start
    if (kind === 'hole') totals.holes[layer]! += end - start
    while (start < end) {
      const index = Math.floor((start - offset) / binSize)
      const stop = Math.min(end, offset + (index + 1) * binSize)
      const bin = bins[index]!
      if (kind === 'data') bin.present[layer]! += stop - start
      else bin.zero += stop - start
      start = stop
    }
  }
  await sumLayer(disk, 0, offset, offset + length, { offset, binSize, add, options })
  return { binSize, bins, totals }
}

interface SumContext {
  offset: number
  binSize: number
  add: (start: number, end: number, depth: number, kind: 'data' | 'hole' | 'none') => void
  options: OperationOptions
}

/** {@link sumAllocation} of [start, end) of `disk`, at `depth` in the chain on show. */
async function sumLayer(
  disk: Disk,
  depth: number,
  start: number,
  end: number,
  context: SumContext,
): Promise<void> {
  const walk = (from: number, to: number) =>
    forEachExtent(
      disk,
      from,
      to - from,
      (extent) => {
        const kind = !extent.present ? 'none' : extent.zero ? 'hole' : 'data'
        context.add(extent.offset, extent.offset + extent.length, depth + extent.depth, kind)
      },
      context.options,
    )
  const count = disk.countAllocated?.bind(disk)
  if (!count || disk.isAllAllocated?.() === true) return walk(start, end)
  const unit = disk.allocationUnit
  const { offset, binSize } = context
  // Runs of bins this layer holds none of are handed down the chain in one request.
  let belowFrom = -1
  let belowTo = -1
  let from = start
  while (from < end) {
    throwIfAborted(context.options.signal, 'map')
    const index = Math.floor((from - offset) / binSize)
    const to = Math.min(end, offset + (index + 1) * binSize)
    const first = Math.floor(from / unit)
    const stop = Math.ceil(to / unit)
    const held = count(first, stop)
    if (held === 0) {
      if (belowFrom < 0) belowFrom = from
      belowTo = to
    } else {
      if (belowFrom >= 0) await sumBelow(disk, depth, belowFrom, belowTo, context)
      belowFrom = -1
      if (held === stop - first) context.add(from, to, depth, 'data')
      else await walk(from, to)
    }
    from = to
  }
  if (belowFrom >= 0) await sumBelow(disk, depth, belowFrom, belowTo, context)
}

/** What lies below `disk` in [start, end): its backing (one level deeper), zeros past its end. */
async function sumBelow(
  disk: Disk,
  depth: number,
  start: number,
  end: number,
  context: SumContext,
): Promise<void> {
  const backing = disk.backing
  const inside = backing ? Math.min(end, backing.size) : start
  if (backing && inside > start) await sumLayer(backing, depth + 1, start, inside, context)
  if (end > Math.max(start, inside)) context.add(Math.max(start, inside), end, depth, 'none')
}

/**
 * The first run of data this image holds itself (depth 0) at or after `offset`, as [start,
 * end) bytes, or null when there is none up to the end of the disk: the map's "next written
 * range". Found through the layer's allocation summary where it has one, else by walking its
 * extents (a raw file's data extents).
 */
export async function nextWrittenRange(
  disk: Disk,
  offset: number,
  options: OperationOptions = {},
): Promise<[number, number] | null> {
  checkMapRange(disk, offset, 0)
  if (disk.nextAllocatedRun && disk.isAllAllocated?.() !== true) {
    const unit = disk.allocationUnit
    const run = disk.nextAllocatedRun(Math.floor(offset / unit), Math.ceil(disk.size / unit))
    if (!run) return null
    return [Math.max(offset, run[0] * unit), Math.min(disk.size, run[1] * unit)]
  }
  let found: [number, number] | null = null
  await forEachExtent(
    disk,
    offset,
    disk.size - offset,
    (extent) => {
      const data = extent.depth === 0 && extent.present && !extent.zero
      if (found && (!data || extent.offset !== found[1])) return false
      if (data)
        found = found
          ? [found[0], extent.offset + extent.length]
          : [extent.offset, extent.offset + extent.length]
      return true
    },
    options,
  )
  return found
}
