import { describe, expect, it } from 'vitest'
import {
  allocationCaption,
  clustersText,
  legendOf,
  legendRows,
  LIGHT_PALETTE,
  type Allocation,
} from '../../../../renderer/src/lib/allocation'
import { chainLegend, LINK_STYLES, OUTSIDE_DASH } from '../../../../renderer/src/lib/chain-graph'
import { KIB, MIB } from '../helpers/fixtures'

// The legends as data: the chain browser's keys come from the table the graph draws its links
// with, and the allocation legend's rows count the range on show beside the whole disk.

const COLORS = { line: '#888', warning: '#a60', error: '#c00' }

describe('chainLegend', () => {
  it('draws each kind of link as the graph draws it, then a base outside the library', () => {
    const legend = chainLegend(COLORS)
    expect(legend.map((item) => item.label)).toEqual([
      'base matches',
      'base unverified',
      'base not read (flattened)',
      'base changed',
      'untrusted base',
      'base missing',
      'base names loop',
      'not in the library',
    ])
    for (const item of legend.slice(0, 7)) {
      const style = LINK_STYLES[item.key as keyof typeof LINK_STYLES]
      expect(item.swatch).toEqual({ shape: 'line', color: COLORS[style.tone], dash: style.dash })
    }
    // Every kind of link is told apart by its colour or its dash (issue 12: an unverified
    // base never looks like a matching one, nor like an untrusted one; a loop is red and solid).
    const swatches = legend.slice(0, 7).map((item) => JSON.stringify(item.swatch))
    expect(new Set(swatches).size).toBe(7)
    expect(legend[7]!.swatch).toEqual({ shape: 'box', color: COLORS.line, dash: OUTSIDE_DASH })
  })
})

function allocation(offset: number, length: number, bucketSize: number): Allocation {
  return {
    virtualSize: 32 * MIB,
    clusterSize: 64 * KIB,
    offset,
    length,
    bucketSize,
    layers: [
      { depth: 0, path: '/vm/o.add-cow', format: 'add-cow' },
      { depth: 1, path: '/vm/golden.img', format: 'raw' },
    ],
    buckets: Array.from({ length: Math.ceil(length / bucketSize) }, () => ({
      present: [0, bucketSize],
      zero: 0,
    })),
    totals: { present: [MIB, length - MIB], zero: 0 },
  }
}

describe('the allocation legend', () => {
  it('counts the view, and the whole disk beside it when zoomed', () => {
    const whole = allocation(0, 32 * MIB, 64 * KIB)
    const view = allocation(0, 2 * MIB, 64 * KIB)
    const rows = legendRows(
      legendOf(view.totals, view.layers, LIGHT_PALETTE),
      legendOf(whole.totals, whole.layers, LIGHT_PALETTE),
    )
    expect(rows.map((row) => [row.label, row.view.bytes, row.whole?.bytes])).toEqual([
      ['This image', MIB, MIB],
      ['Layer 1', MIB, 31 * MIB],
      ['Unallocated (reads as zeros)', 0, 0],
    ])
    expect(legendRows(legendOf(view.totals, view.layers, LIGHT_PALETTE), null)[0]!.whole).toBeNull()
  })

  it('says what the map shows and what a cell stands for', () => {
    expect(allocationCaption(allocation(0, 32 * MIB, 64 * KIB), 64 * KIB)).toBe(
      'The whole disk (32 MiB) · 512 cells, one cell per cluster of 64 KiB',
    )
    expect(allocationCaption(allocation(MIB, 2 * MIB, MIB), 64 * KIB)).toBe(
      '1 MiB to 3 MiB of 32 MiB · 2 cells, each cell 1 MiB',
    )
    expect(clustersText(1)).toBe('1 cluster')
    expect(clustersText(16384)).toBe('16,384 clusters')
  })
})
