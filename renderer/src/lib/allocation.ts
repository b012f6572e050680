import type { ResponseOf } from '../../../shared/ipc/contract'
import { formatBytes, formatCount } from '../composables/use-format'

/**
 * The allocation map's logic, kept free of Vue and of the DOM so it can be tested on its own:
 * which buckets to ask main for, how the grid of cells is laid out, which colour each depth
 * gets, how a cell's stripes are drawn on a canvas, what a cell covers, and how zooming moves
 * the visible range.
 *
 * main sums the chain's allocation into at most 4096 buckets (image:get-allocation), so the
 * renderer never holds per-cluster data: a 1 TiB disk of 64 KiB clusters (16M clusters) is
 * drawn from the same few thousand buckets as a 16 MiB one, and zooming asks main for a finer
 * sum of the visible range.
 */

/** What image:get-allocation answers. */
export type Allocation = ResponseOf<'image:get-allocation'>

/** One bucket of an {@link Allocation}. */
export type AllocationBucket = Allocation['buckets'][number]

/** The most buckets image:get-allocation gives at once. */
export const MAX_BUCKETS = 4096

/** The part of the disk on show. */
export interface ViewRange {
  offset: number
  length: number
}

/** Colours of the map: one per depth (cycled past the end), and the unallocated colour. */
export interface Palette {
  depths: readonly string[]
  unallocated: string
  /** Outline of the focused cell. */
  focus: string
}

/** Light theme: depth 0 (the image itself) in the app's green, deeper layers in other hues. */
export const LIGHT_PALETTE: Palette = {
  depths: ['#2f8f63', '#3a6fc4', '#8a55c9', '#c4731f', '#c2417a', '#23929a', '#7b8a1f', '#9a5a3c'],
  unallocated: '#e3e6ea',
  focus: '#1f2328',
}

/** Dark theme: the same hues, lighter, on a dark unallocated colour. */
export const DARK_PALETTE: Palette = {
  depths: ['#5fcf98', '#74a7f2', '#b792f2', '#f0a75c', '#f17daa', '#5ccbd1', '#bfcd5c', '#dc9a78'],
  unallocated: '#2f333b',
  focus: '#f4f6f8',
}

/** The palette for a theme. */
export function paletteFor(dark: boolean): Palette {
  return dark ? DARK_PALETTE : LIGHT_PALETTE
}

/** The colour of a depth (0 = the image itself); depths past the palette reuse its colours. */
export function depthColor(palette: Palette, depth: number): string {
  const colours = palette.depths
  return colours[((depth % colours.length) + colours.length) % colours.length] ?? '#888888'
}

/** What to ask image:get-allocation for a range drawn in at most `cells` cells. */
export interface AllocationRequestPlan {
  offset: number
  length: number
  buckets: number
}

/**
 * The request for `range` drawn in at most `cells` cells: never more buckets than clusters in
 * the range (a cell is at least one cluster) nor more than {@link MAX_BUCKETS}.
 */
export function planRequest(
  range: ViewRange,
  cells: number,
  clusterSize: number,
): AllocationRequestPlan {
  const unit = Math.max(1, clusterSize)
  const clusters = Math.max(1, Math.ceil(range.length / unit))
  const buckets = Math.max(1, Math.min(MAX_BUCKETS, Math.floor(cells), clusters))
  return { offset: range.offset, length: range.length, buckets }
}

/** Where the cells of the map go. */
export interface GridLayout {
  count: number
  columns: number
  rows: number
  /** Side of a cell in CSS pixels. */
  cell: number
  gap: number
  width: number
  height: number
}

/** Largest and smallest side of a cell, and the space between cells. */
export const CELL_MAX = 14
export const CELL_MIN = 6
export const CELL_GAP = 1

/** How many cells fit across `width` pixels at the largest cell size. */
export function columnsFor(width: number, cell = CELL_MAX, gap = CELL_GAP): number {
  return Math.max(1, Math.floor((Math.max(0, width) + gap) / (cell + gap)))
}

/** Tallest the map grows before its cells shrink (CSS pixels): 20 rows of the largest cells. */
export const MAP_MAX_HEIGHT = 299

/**
 * Lay `count` cells out in rows across `width` pixels: cells as large as {@link CELL_MAX}, made
 * smaller (down to {@link CELL_MIN}) while the map would be taller than `maxHeight`; fewer cells
 * than a row fill one short row.
 */
export function gridLayout(count: number, width: number, maxHeight = MAP_MAX_HEIGHT): GridLayout {
  let cell = CELL_MAX
  let columns = columnsFor(width, cell)
  while (cell > CELL_MIN && Math.ceil(count / columns) * (cell + CELL_GAP) - CELL_GAP > maxHeight) {
    cell--
    columns = columnsFor(width, cell)
  }
  columns = Math.max(1, Math.min(columns, count))
  const rows = count === 0 ? 0 : Math.ceil(count / columns)
  return {
    count,
    columns,
    rows,
    cell,
    gap: CELL_GAP,
    width: columns * (cell + CELL_GAP) - CELL_GAP,
    height: rows === 0 ? 0 : rows * (cell + CELL_GAP) - CELL_GAP,
  }
}

/** Cells the map offers for `width` pixels: full rows of the largest cells, up to the most buckets. */
export function cellsFor(width: number, maxHeight = MAP_MAX_HEIGHT): number {
  const rows = Math.max(1, Math.floor((maxHeight + CELL_GAP) / (CELL_MAX + CELL_GAP)))
  return Math.min(MAX_BUCKETS, columnsFor(width) * rows)
}

/** The top-left corner of cell `index`. */
export function cellOrigin(layout: GridLayout, index: number): { x: number; y: number } {
  const step = layout.cell + layout.gap
  return { x: (index % layout.columns) * step, y: Math.floor(index / layout.columns) * step }
}

/** The cell under the point (x, y) in CSS pixels, or null between cells and outside. */
export function cellAt(layout: GridLayout, x: number, y: number): number | null {
  if (x < 0 || y < 0) return null
  const step = layout.cell + layout.gap
  const column = Math.floor(x / step)
  const row = Math.floor(y / step)
  if (column >= layout.columns || x - column * step >= layout.cell) return null
  if (row >= layout.rows || y - row * step >= layout.cell) return null
  const index = row * layout.columns + column
  return index < layout.count ? index : null
}

/** One coloured band of a cell: `depth` -1 is the unallocated part. */
export interface Stripe {
  depth: number
  y: number
  height: number
}

/**
 * Write the band heights of one cell into `out` from `at`: `out[at + d]` for depth d (d <
 * `depths`), `out[at + depths]` for the unallocated part. Each band is as tall as its share of
 * the bucket; a band with any bytes gets at least `minimum` pixels, so one written cluster in a
 * bucket of gigabytes still shows, and what the minimums add is taken back from the tallest
 * bands. Allocates nothing: the map calls it once per cell on every draw.
 */
export function stripeHeightsInto(
  bucket: AllocationBucket,
  depths: number,
  height: number,
  minimum: number,
  out: Float64Array,
  at: number,
): void {
  let total = bucket.zero
  let shown = bucket.zero > 0 ? 1 : 0
  for (let depth = 0; depth < depths; depth++) {
    const bytes = bucket.present[depth] ?? 0
    total += bytes
    if (bytes > 0) shown++
  }
  for (let index = 0; index <= depths; index++) out[at + index] = 0
  if (total === 0 || height <= 0) return
  const floor = Math.min(minimum, height / shown)
  let sum = 0
  for (let index = 0; index <= depths; index++) {
    const bytes = index === depths ? bucket.zero : (bucket.present[index] ?? 0)
    if (bytes === 0) continue
    const size = Math.max(floor, (bytes / total) * height)
    out[at + index] = size
    sum += size
  }
  let excess = sum - height
  // Each pass either absorbs the excess or brings one band down to the floor: at most depths + 1.
  for (let pass = 0; pass <= depths && excess > 1e-9; pass++) {
    let tallest = -1
    for (let index = 0; index <= depths; index++) {
      if (tallest === -1 || out[at + index]! > out[at + tallest]!) tallest = index
    }
    const room = out[at + tallest]! - floor
    if (room <= 1e-9) break
    const taken = Math.min(room, excess)
    out[at + tallest] = out[at + tallest]! - taken
    excess -= taken
  }
}

/**
 * The bands of a cell `height` pixels tall, depth 0 at the top and the unallocated part (depth
 * -1) at the bottom; see {@link stripeHeightsInto}.
 */
export function cellStripes(bucket: AllocationBucket, height: number, minimum = 2): Stripe[] {
  const depths = bucket.present.length
  const heights = new Float64Array(depths + 1)
  stripeHeightsInto(bucket, depths, height, minimum, heights, 0)
  const stripes: Stripe[] = []
  let y = 0
  for (let index = 0; index <= depths; index++) {
    const size = heights[index]!
    if (size <= 0) continue
    stripes.push({ depth: index === depths ? -1 : index, y, height: size })
    y += size
  }
  return stripes
}

/** The part of a 2D context the map draws with (a real canvas, or a recorder in tests). */
export type DrawingContext = Pick<
  CanvasRenderingContext2D,
  'fillStyle' | 'strokeStyle' | 'lineWidth' | 'fillRect' | 'clearRect' | 'strokeRect'
>

/** Smallest band of a depth with any bytes in a cell, in pixels. */
const MINIMUM_STRIPE = 2

/**
 * Draw every bucket as a cell of stripes. The cells are filled with the unallocated colour in
 * one pass, then one pass per depth, so the fill style changes once per colour, not per cell;
 * band heights go to one typed array and nothing is allocated per cell, so a full map of 4096
 * buckets is a few thousand rectangles and a few milliseconds.
 */
export function drawAllocation(
  context: DrawingContext,
  buckets: readonly AllocationBucket[],
  layout: GridLayout,
  palette: Palette,
  focused: number | null = null,
): void {
  context.clearRect(0, 0, layout.width + 4, layout.height + 4)
  const count = Math.min(buckets.length, layout.count)
  const { columns, cell } = layout
  const step = cell + layout.gap
  let depths = 0
  for (let index = 0; index < count; index++)
    depths = Math.max(depths, buckets[index]!.present.length)
  const stride = depths + 1
  const heights = new Float64Array(count * stride)
  context.fillStyle = palette.unallocated
  for (let index = 0; index < count; index++) {
    context.fillRect((index % columns) * step, Math.floor(index / columns) * step, cell, cell)
    stripeHeightsInto(buckets[index]!, depths, cell, MINIMUM_STRIPE, heights, index * stride)
  }
  // Depth d's band starts below the bands of depths 0..d-1: keep each cell's running top.
  const tops = new Float64Array(count)
  for (let depth = 0; depth < depths; depth++) {
    context.fillStyle = depthColor(palette, depth)
    for (let index = 0; index < count; index++) {
      const size = heights[index * stride + depth]!
      if (size <= 0) continue
      const x = (index % columns) * step
      const y = Math.floor(index / columns) * step + tops[index]!
      context.fillRect(x, y, cell, size)
      tops[index] = tops[index]! + size
    }
  }
  if (focused !== null && focused >= 0 && focused < count) {
    context.strokeStyle = palette.focus
    context.lineWidth = 2
    context.strokeRect(
      (focused % columns) * step + 1,
      Math.floor(focused / columns) * step + 1,
      cell - 2,
      cell - 2,
    )
  }
}

/** The bytes a bucket covers: [start, end). */
export function bucketSpan(allocation: Allocation, index: number): { start: number; end: number } {
  const start = allocation.offset + index * allocation.bucketSize
  const end = Math.min(allocation.offset + allocation.length, start + allocation.bucketSize)
  return { start, end }
}

/**
 * One line of the legend: a depth with its bytes of data; -1 for the unallocated
 * part, and -2 - d for the holes of depth d (bytes a layer holds that read as zeros, such as a
 * sparse raw base's holes: qemu-img map's `"zero": true, "data": false`).
 */
export interface LegendEntry {
  depth: number
  label: string
  path: string | null
  format: string | null
  bytes: number
  color: string
}

/**
 * The legend of an allocation: every layer of the chain with the data it provides, then the
 * holes of each layer that has any (they read as zeros), then the unallocated part.
 */
export function legendOf(
  totals: Allocation['totals'],
  layers: Allocation['layers'],
  palette: Palette,
): LegendEntry[] {
  const entries: LegendEntry[] = layers.map((layer) => {
    const bytes = totals.present[layer.depth] ?? 0
    return {
      depth: layer.depth,
      label: layer.depth === 0 ? 'This image' : `Layer ${layer.depth}`,
      path: layer.path,
      format: layer.format,
      bytes,
      color: depthColor(palette, layer.depth),
    }
  })
  let holes = 0
  for (const layer of layers) {
    const bytes = totals.holes?.[layer.depth] ?? 0
    if (bytes === 0) continue
    holes += bytes
    entries.push({
      depth: -2 - layer.depth,
      label: `${layer.depth === 0 ? 'Holes in this image' : `Holes in layer ${layer.depth}`} (read as zeros)`,
      path: layer.path,
      // The layer's line names its format already.
      format: null,
      bytes,
      color: palette.unallocated,
    })
  }
  const unallocated = Math.max(0, totals.zero - holes)
  entries.push({
    depth: -1,
    label: 'Unallocated (reads as zeros)',
    path: null,
    format: null,
    bytes: unallocated,
    color: palette.unallocated,
  })
  return entries
}

/** Bytes of one source (said in clusters with {@link clusterAmountText}). */
export interface LegendCount {
  bytes: number
}

/** One row of the allocation legend: a source, its counts in view and on the whole disk. */
export interface LegendRow {
  depth: number
  label: string
  path: string | null
  format: string | null
  color: string
  view: LegendCount
  /** The whole disk's counts, when the view is zoomed (null otherwise). */
  whole: LegendCount | null
}

/** The legend's rows: the range on show, with the whole disk beside it when zoomed. */
export function legendRows(
  view: readonly LegendEntry[],
  whole: readonly LegendEntry[] | null,
): LegendRow[] {
  return view.map((entry) => {
    const match = whole?.find((other) => other.depth === entry.depth)
    return {
      depth: entry.depth,
      label: entry.label,
      path: entry.path,
      format: entry.format,
      color: entry.color,
      view: { bytes: entry.bytes },
      whole: match ? { bytes: match.bytes } : null,
    }
  })
}

/** What the map shows, in words: the range and what one cell stands for. */
export function allocationCaption(allocation: Allocation, clusterSize: number | null): string {
  const end = allocation.offset + allocation.length
  const where = isWholeDisk(
    { offset: allocation.offset, length: allocation.length },
    allocation.virtualSize,
  )
    ? `The whole disk (${formatBytes(allocation.virtualSize)})`
    : `${formatBytes(allocation.offset)} to ${formatBytes(end)} of ${formatBytes(allocation.virtualSize)}`
  const perCell =
    clusterSize && allocation.bucketSize <= clusterSize
      ? `one cell per cluster of ${formatBytes(clusterSize)}`
      : `each cell ${formatBytes(allocation.bucketSize)}`
  return `${where} · ${allocation.buckets.length.toLocaleString('en')} cells, ${perCell}`
}

/** `1 cluster`, `16,384 clusters`. */
export function clustersText(count: number): string {
  return `${formatCount(count)} ${count === 1 ? 'cluster' : 'clusters'}`
}

/**
 * `bytes` in clusters of `clusterSize`, the part of a cluster left over said in bytes:
 * `32 clusters`, `32 clusters + 4 KiB` (a 4 KiB boot sector in a cluster that is otherwise a
 * hole), `less than 1 cluster`. Never rounded to a whole count, which would say a range holds
 * a cluster it only partly holds, or none where it holds a few KiB.
 */
export function clusterAmountText(bytes: number, clusterSize: number): string {
  const whole = Math.floor(bytes / clusterSize)
  const rest = bytes - whole * clusterSize
  if (rest === 0) return clustersText(whole)
  return whole === 0 ? 'less than 1 cluster' : `${clustersText(whole)} + ${formatBytes(rest)}`
}

function alignDown(value: number, unit: number): number {
  return Math.floor(value / unit) * unit
}

function alignUp(value: number, unit: number): number {
  return Math.ceil(value / unit) * unit
}

/**
 * Keep a range inside the disk and on cluster boundaries (the end may be the disk's end), at
 * least `minimum` long when the disk allows.
 */
export function clampRange(
  range: ViewRange,
  virtualSize: number,
  clusterSize: number,
  minimum: number,
): ViewRange {
  const unit = Math.max(1, clusterSize)
  const length = Math.min(virtualSize, Math.max(minimum, alignUp(range.length, unit)))
  let offset = alignDown(Math.max(0, range.offset), unit)
  if (offset + length > virtualSize) offset = Math.max(0, alignDown(virtualSize - length, unit))
  return { offset, length: Math.min(length, virtualSize - offset) }
}

/**
 * Zoom in on cell `index`: a range `factor` times shorter, centred on the cell, never shorter
 * than one cluster per cell.
 */
export function zoomIn(
  allocation: Allocation,
  index: number,
  factor: number,
  clusterSize: number,
  cells: number,
): ViewRange {
  const { start, end } = bucketSpan(allocation, index)
  const minimum = Math.max(1, clusterSize) * Math.max(1, Math.min(cells, MAX_BUCKETS))
  const length = Math.max(minimum, Math.ceil(allocation.length / factor))
  const centre = (start + end) / 2
  return clampRange(
    { offset: Math.round(centre - length / 2), length },
    allocation.virtualSize,
    clusterSize,
    minimum,
  )
}

/** Zoom out: a range `factor` times longer around the current one's centre. */
export function zoomOut(
  range: ViewRange,
  factor: number,
  virtualSize: number,
  clusterSize: number,
): ViewRange {
  const length = Math.min(virtualSize, range.length * factor)
  const centre = range.offset + range.length / 2
  return clampRange(
    { offset: Math.round(centre - length / 2), length },
    virtualSize,
    clusterSize,
    length,
  )
}

/**
 * The view that shows the written range starting at `start`: as long as the view on show when
 * zoomed, else the shortest view (one cluster per cell); the range starts an eighth of the way
 * in, so what comes before it shows too.
 */
export function viewAround(
  start: number,
  current: ViewRange,
  virtualSize: number,
  clusterSize: number,
  cells: number,
): ViewRange {
  const minimum = Math.max(1, clusterSize) * Math.max(1, Math.min(cells, MAX_BUCKETS))
  const length = isWholeDisk(current, virtualSize) ? minimum : Math.max(minimum, current.length)
  return clampRange(
    { offset: Math.round(start - length / 8), length },
    virtualSize,
    clusterSize,
    Math.min(minimum, virtualSize),
  )
}

/** The cell of `allocation` that holds byte `offset`, or null outside its range. */
export function cellOf(allocation: Allocation, offset: number): number | null {
  if (allocation.bucketSize === 0) return null
  const index = Math.floor((offset - allocation.offset) / allocation.bucketSize)
  return index >= 0 && index < allocation.buckets.length ? index : null
}

/** Whether a range covers the whole disk. */
export function isWholeDisk(range: ViewRange, virtualSize: number): boolean {
  return range.offset === 0 && range.length >= virtualSize
}

/** A byte offset as hexadecimal, as qemu-io and qemu-img map print offsets. */
export function hexOffset(offset: number): string {
  return `0x${offset.toString(16)}`
}
