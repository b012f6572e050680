import { describe, expect, it } from 'vitest'
import {
  bucketSpan,
  cellAt,
  cellOf,
  cellOrigin,
  CELL_MIN,
  cellStripes,
  cellsFor,
  clampRange,
  clusterAmountText,
  DARK_PALETTE,
  depthColor,
  drawAllocation,
  gridLayout,
  hexOffset,
  isWholeDisk,
  legendOf,
  LIGHT_PALETTE,
  MAP_MAX_HEIGHT,
  MAX_BUCKETS,
  planRequest,
  stripeHeightsInto,
  viewAround,
  zoomIn,
  zoomOut,
  type Allocation,
  type AllocationBucket,
  type DrawingContext,
} from '../../../../renderer/src/lib/allocation'

// The allocation map's logic: what it asks main for, how cells are laid out and hit, how a
// bucket becomes coloured bands, what the legend counts, and how zooming moves the range,
// including a 1 TiB disk of 64 KiB clusters (16M clusters) summed into 4096 buckets.

const KIB = 1024
const MIB = 1024 * KIB
const GIB = 1024 * MIB
const TIB = 1024 * GIB

/** A context that records what the map draws. */
class RecordingContext implements DrawingContext {
  fillStyle: DrawingContext['fillStyle'] = '#000000'
  strokeStyle: DrawingContext['strokeStyle'] = '#000000'
  lineWidth = 1
  fills: { style: string; x: number; y: number; width: number; height: number }[] = []
  strokes: { style: string; x: number; y: number; width: number; height: number }[] = []
  styleChanges = 0
  private lastStyle = ''
  cleared = 0

  fillRect(x: number, y: number, width: number, height: number): void {
    const style = String(this.fillStyle)
    if (style !== this.lastStyle) this.styleChanges++
    this.lastStyle = style
    this.fills.push({ style, x, y, width, height })
  }
  strokeRect(x: number, y: number, width: number, height: number): void {
    this.strokes.push({ style: String(this.strokeStyle), x, y, width, height })
  }
  clearRect(): void {
    this.cleared++
  }
}

/**
 * What main answers for a 1 TiB image of 64 KiB clusters in 4096 buckets, written in a few
 * places over a 1 TiB raw base that holds data only in its first 8 MiB.
 */
function terabyteAllocation(): Allocation {
  const bucketSize = TIB / MAX_BUCKETS
  const buckets: AllocationBucket[] = Array.from({ length: MAX_BUCKETS }, () => ({
    present: [0, 0],
    zero: bucketSize,
  }))
  const put = (offset: number, length: number, depth: number): void => {
    const bucket = buckets[Math.floor(offset / bucketSize)]!
    bucket.present[depth]! += length
    bucket.zero -= length
  }
  put(0, 8 * MIB, 1)
  put(300 * GIB, 64 * KIB, 0)
  put(768 * GIB, 1 * MIB, 0)
  const totals = { present: [0, 0], zero: 0 }
  for (const bucket of buckets) {
    totals.present[0]! += bucket.present[0]!
    totals.present[1]! += bucket.present[1]!
    totals.zero += bucket.zero
  }
  return {
    virtualSize: TIB,
    clusterSize: 64 * KIB,
    offset: 0,
    length: TIB,
    bucketSize,
    layers: [
      { depth: 0, path: '/vm/huge.add-cow', format: 'add-cow' },
      { depth: 1, path: '/vm/huge.img', format: 'raw' },
    ],
    buckets,
    totals,
  }
}

describe('planRequest', () => {
  it('asks for one bucket per cell, never more than clusters in the range nor 4096', () => {
    expect(planRequest({ offset: 0, length: TIB }, 2240, 64 * KIB)).toEqual({
      offset: 0,
      length: TIB,
      buckets: 2240,
    })
    // 32 MiB of 64 KiB clusters: 512 clusters, so 512 buckets of one cluster each.
    expect(planRequest({ offset: 0, length: 32 * MIB }, 2240, 64 * KIB).buckets).toBe(512)
    expect(planRequest({ offset: 0, length: TIB }, 100_000, 64 * KIB).buckets).toBe(MAX_BUCKETS)
    expect(planRequest({ offset: 0, length: 0 }, 100, 64 * KIB).buckets).toBe(1)
  })
})

describe('the grid', () => {
  it('fills rows of the largest cells across the width', () => {
    const layout = gridLayout(512, 1050)
    expect(layout.cell).toBe(14)
    expect(layout.columns).toBe(70)
    expect(layout.rows).toBe(8)
    expect(layout.width).toBe(70 * 15 - 1)
    expect(layout.height).toBe(8 * 15 - 1)
  })

  it('shrinks the cells to keep 4096 cells within the height, down to the smallest cell', () => {
    const layout = gridLayout(4096, 1200)
    expect(layout.cell).toBeLessThan(14)
    expect(layout.height).toBeLessThanOrEqual(MAP_MAX_HEIGHT)
    expect(layout.columns * layout.rows).toBeGreaterThanOrEqual(4096)
    const narrow = gridLayout(4096, 600)
    expect(narrow.cell).toBe(CELL_MIN)
    expect(narrow.columns * narrow.rows).toBeGreaterThanOrEqual(4096)
  })

  it('offers full rows for the width and never more than 4096 cells', () => {
    expect(cellsFor(1050)).toBe(70 * 20)
    expect(cellsFor(10_000)).toBe(MAX_BUCKETS)
    expect(cellsFor(0)).toBe(20)
  })

  it('finds the cell under a point, and none in the gaps or past the last cell', () => {
    const layout = gridLayout(20, 15 * 8)
    expect(layout.columns).toBe(8)
    expect(cellAt(layout, 0, 0)).toBe(0)
    expect(cellAt(layout, 13.9, 13.9)).toBe(0)
    expect(cellAt(layout, 14.5, 3)).toBeNull()
    expect(cellAt(layout, 15, 15)).toBe(9)
    // Row 2, column 5 would be cell 21: past the last of 20.
    expect(cellAt(layout, 15 * 5, 15 * 2)).toBeNull()
    expect(cellAt(layout, 15 * 3, 15 * 2)).toBe(19)
    expect(cellAt(layout, -1, 0)).toBeNull()
    expect(cellOrigin(layout, 9)).toEqual({ x: 15, y: 15 })
  })
})

describe('bands of a cell', () => {
  it('splits the cell by share, depth 0 on top and the unallocated part last', () => {
    const stripes = cellStripes({ present: [MIB, MIB], zero: 2 * MIB }, 12)
    expect(stripes).toEqual([
      { depth: 0, y: 0, height: 3 },
      { depth: 1, y: 3, height: 3 },
      { depth: -1, y: 6, height: 6 },
    ])
  })

  it('gives a tiny share the minimum height and takes it back from the tallest band', () => {
    // One 64 KiB cluster in a 256 MiB bucket: 0.003 px by share, 2 px shown.
    const stripes = cellStripes({ present: [64 * KIB, 0], zero: 256 * MIB - 64 * KIB }, 14)
    expect(stripes.map((stripe) => stripe.depth)).toEqual([0, -1])
    expect(stripes[0]!.height).toBe(2)
    expect(stripes[1]!.height).toBeCloseTo(12, 9)
    expect(stripes.reduce((sum, stripe) => sum + stripe.height, 0)).toBeCloseTo(14, 9)
  })

  it('always fills exactly the cell, whatever the mix', () => {
    const mixes: AllocationBucket[] = [
      { present: [1, 1, 1, 1, 1, 1, 1, 1], zero: 1 },
      { present: [5, 0, 0, 1], zero: 10_000_000 },
      { present: [0, 0, 7], zero: 0 },
      { present: [GIB], zero: 1 },
    ]
    for (const bucket of mixes) {
      const heights = new Float64Array(bucket.present.length + 1)
      stripeHeightsInto(bucket, bucket.present.length, 6, 2, heights, 0)
      const total = heights.reduce((sum, value) => sum + value, 0)
      expect(total).toBeCloseTo(6, 9)
      for (const [index, height] of heights.entries()) {
        const bytes = index === bucket.present.length ? bucket.zero : bucket.present[index]!
        if (bytes > 0) expect(height).toBeGreaterThan(0)
        else expect(height).toBe(0)
      }
    }
  })

  it('draws nothing for an empty bucket', () => {
    expect(cellStripes({ present: [0], zero: 0 }, 14)).toEqual([])
  })
})

describe('drawing', () => {
  it('draws a 1 TiB disk of 16M clusters from 4096 buckets, one fill style per colour', () => {
    const allocation = terabyteAllocation()
    const layout = gridLayout(allocation.buckets.length, 1050)
    const context = new RecordingContext()
    drawAllocation(context, allocation.buckets, layout, LIGHT_PALETTE, 5)
    // Every cell gets its unallocated background; the three buckets with data get a band.
    const background = context.fills.filter((fill) => fill.style === LIGHT_PALETTE.unallocated)
    expect(background).toHaveLength(4096)
    const own = context.fills.filter((fill) => fill.style === depthColor(LIGHT_PALETTE, 0))
    const base = context.fills.filter((fill) => fill.style === depthColor(LIGHT_PALETTE, 1))
    expect(own).toHaveLength(2)
    expect(base).toHaveLength(1)
    // The band sits in the cell of bucket 1200 (300 GiB / 256 MiB per bucket).
    const origin = cellOrigin(layout, (300 * GIB) / allocation.bucketSize)
    expect(own[0]).toMatchObject({ x: origin.x, y: origin.y, width: layout.cell, height: 2 })
    expect(context.styleChanges).toBe(3)
    expect(context.strokes).toEqual([
      expect.objectContaining({ style: LIGHT_PALETTE.focus, x: cellOrigin(layout, 5).x + 1 }),
    ])
    expect(context.cleared).toBe(1)
  })

  it('stacks the bands of one cell top to bottom', () => {
    const layout = gridLayout(1, 100)
    const context = new RecordingContext()
    drawAllocation(context, [{ present: [4, 4, 4], zero: 2 }], layout, DARK_PALETTE)
    const bands = context.fills.slice(1)
    expect(bands.map((band) => band.style)).toEqual(
      [0, 1, 2].map((d) => depthColor(DARK_PALETTE, d)),
    )
    expect(bands[0]!.y).toBe(0)
    expect(bands[1]!.y).toBeCloseTo(bands[0]!.height, 9)
    expect(bands[2]!.y).toBeCloseTo(bands[0]!.height + bands[1]!.height, 9)
  })

  it('gives each depth its own colour, in light and dark, cycling past the palette', () => {
    for (const palette of [LIGHT_PALETTE, DARK_PALETTE]) {
      const colours = palette.depths.map((_, depth) => depthColor(palette, depth))
      expect(new Set(colours).size).toBe(colours.length)
      expect(colours).not.toContain(palette.unallocated)
      expect(depthColor(palette, palette.depths.length)).toBe(colours[0])
    }
  })
})

describe('legend and spans', () => {
  it("gives each layer's holes a line of their own, apart from the unallocated part", () => {
    const allocation = terabyteAllocation()
    // The base is a sparse 1 TiB raw file: what the overlay does not hold is the base's data
    // (8 MiB) and its holes, which read as zeros.
    const holes = TIB - 8 * MIB - MIB - 64 * KIB
    const legend = legendOf(
      { ...allocation.totals, holes: [0, holes] },
      allocation.layers,
      LIGHT_PALETTE,
    )
    expect(legend.map((entry) => [entry.depth, entry.label, entry.bytes])).toEqual([
      [0, 'This image', 64 * KIB + MIB],
      [1, 'Layer 1', 8 * MIB],
      [-3, 'Holes in layer 1 (read as zeros)', holes],
      [-1, 'Unallocated (reads as zeros)', 0],
    ])
    expect(legend[2]).toMatchObject({ path: '/vm/huge.img', color: LIGHT_PALETTE.unallocated })
  })

  it('counts clusters per layer and the unallocated rest over 16M clusters', () => {
    const allocation = terabyteAllocation()
    const legend = legendOf(allocation.totals, allocation.layers, LIGHT_PALETTE)
    expect(
      legend.map((entry) => [entry.label, clusterAmountText(entry.bytes, 64 * KIB), entry.bytes]),
    ).toEqual([
      ['This image', '17 clusters', 64 * KIB + MIB],
      ['Layer 1', '128 clusters', 8 * MIB],
      ['Unallocated (reads as zeros)', '16,777,071 clusters', TIB - 8 * MIB - MIB - 64 * KIB],
    ])
    expect(legend[0]).toMatchObject({ path: '/vm/huge.add-cow', format: 'add-cow' })
  })

  it('says a part of a cluster in bytes, never as a rounded cluster', () => {
    // A 4 KiB boot sector in a base cluster that is otherwise a hole: 32 clusters of data and
    // 4 KiB (it used to read "32 clusters"), and the 60 KiB of hole beside it (it used to
    // read "1 cluster").
    expect(clusterAmountText(2 * MIB + 4 * KIB, 64 * KIB)).toBe('32 clusters + 4 KiB')
    expect(clusterAmountText(60 * KIB, 64 * KIB)).toBe('less than 1 cluster')
    expect(clusterAmountText(64 * KIB, 64 * KIB)).toBe('1 cluster')
    expect(clusterAmountText(0, 64 * KIB)).toBe('0 clusters')
    expect(clusterAmountText(16_384 * 64 * KIB, 64 * KIB)).toBe('16,384 clusters')
  })

  it('names the bytes each cell covers, the last one cut at the end of the range', () => {
    const allocation: Allocation = {
      ...terabyteAllocation(),
      offset: 10 * MIB,
      length: 10 * MIB + 5,
      bucketSize: MIB,
    }
    expect(bucketSpan(allocation, 0)).toEqual({ start: 10 * MIB, end: 11 * MIB })
    expect(bucketSpan(allocation, 10)).toEqual({ start: 20 * MIB, end: 20 * MIB + 5 })
    expect(hexOffset(64 * KIB)).toBe('0x10000')
  })
})

describe('zooming', () => {
  it('zooms in on a cell, eight times narrower, centred and aligned to clusters', () => {
    const allocation = terabyteAllocation()
    const next = zoomIn(allocation, 2048, 8, 64 * KIB, 4096)
    expect(next.length).toBe(TIB / 8)
    expect(next.offset % (64 * KIB)).toBe(0)
    const centre = 512 * GIB + allocation.bucketSize / 2
    expect(next.offset).toBeLessThanOrEqual(centre)
    expect(next.offset + next.length).toBeGreaterThan(centre)
  })

  it('stays inside the disk at its start and end', () => {
    const allocation = terabyteAllocation()
    expect(zoomIn(allocation, 0, 8, 64 * KIB, 4096).offset).toBe(0)
    const last = zoomIn(allocation, 4095, 8, 64 * KIB, 4096)
    expect(last.offset + last.length).toBe(TIB)
  })

  it('stops at one cluster per cell', () => {
    let allocation = terabyteAllocation()
    let range = { offset: 0, length: TIB }
    for (let step = 0; step < 10; step++) {
      range = zoomIn(allocation, 1200, 8, 64 * KIB, 2048)
      const buckets = planRequest(range, 2048, 64 * KIB).buckets
      allocation = {
        ...allocation,
        ...range,
        bucketSize: Math.ceil(range.length / buckets),
        buckets: allocation.buckets.slice(0, buckets),
      }
    }
    expect(range.length).toBe(2048 * 64 * KIB)
    expect(allocation.bucketSize).toBe(64 * KIB)
  })

  it('zooms out around the centre, up to the whole disk', () => {
    const out = zoomOut({ offset: 512 * GIB, length: GIB }, 8, TIB, 64 * KIB)
    expect(out).toEqual({ offset: 512 * GIB + GIB / 2 - 4 * GIB, length: 8 * GIB })
    const whole = zoomOut({ offset: 0, length: 512 * GIB }, 8, TIB, 64 * KIB)
    expect(isWholeDisk(whole, TIB)).toBe(true)
  })

  it('clamps a range to the disk, for a disk smaller than the minimum too', () => {
    expect(clampRange({ offset: -5, length: 3 }, 16 * MIB, 64 * KIB, 0)).toEqual({
      offset: 0,
      length: 64 * KIB,
    })
    expect(clampRange({ offset: 0, length: 1 }, 16 * MIB, 64 * KIB, GIB)).toEqual({
      offset: 0,
      length: 16 * MIB,
    })
    expect(clampRange({ offset: 15 * MIB, length: 4 * MIB }, 16 * MIB, 64 * KIB, 0)).toEqual({
      offset: 12 * MIB,
      length: 4 * MIB,
    })
  })
})

describe('the next written range', () => {
  it('shows a found range at one cluster per cell from the whole disk, at the zoom on show otherwise', () => {
    const whole = { offset: 0, length: TIB }
    expect(viewAround(300 * GIB, whole, TIB, 64 * KIB, 2000)).toEqual({
      offset: 300 * GIB - 250 * 64 * KIB,
      length: 2000 * 64 * KIB,
    })
    const zoomed = { offset: 0, length: 16 * GIB }
    expect(viewAround(768 * GIB, zoomed, TIB, 64 * KIB, 2000)).toEqual({
      offset: 768 * GIB - 2 * GIB,
      length: 16 * GIB,
    })
    // Near the end the view stays inside the disk; the range is still in it.
    const last = viewAround(TIB - 64 * KIB, zoomed, TIB, 64 * KIB, 2000)
    expect(last).toEqual({ offset: TIB - 16 * GIB, length: 16 * GIB })
  })

  it('finds the cell that holds an offset', () => {
    const allocation = terabyteAllocation()
    expect(cellOf(allocation, 300 * GIB)).toBe(Math.floor((300 * GIB) / (TIB / MAX_BUCKETS)))
    expect(cellOf(allocation, TIB)).toBeNull()
    expect(cellOf({ ...allocation, offset: GIB }, 0)).toBeNull()
  })
})
