// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { describe, expect, it } from 'vitest'
import AllocationLegendTable from '../../../../renderer/src/components/AllocationLegendTable.vue'
import type { LegendRow } from '../../../../renderer/src/lib/allocation'

// The legend's counts: whole clusters, and what is left of a cluster in bytes, never rounded.

const KIB = 1024
const MIB = 1024 * KIB

function row(depth: number, label: string, view: number, whole: number | null): LegendRow {
  return {
    depth,
    label,
    path: depth === 1 ? '/vm/base.raw' : null,
    format: depth === 1 ? 'raw' : null,
    color: '#888',
    view: { bytes: view },
    whole: whole === null ? null : { bytes: whole },
  }
}

describe('AllocationLegendTable', () => {
  it('counts a base with a boot sector in a cluster that is otherwise a hole', () => {
    // A 2 MiB base whose first 64 KiB cluster holds a 4 KiB boot sector and 60 KiB of hole.
    const wrapper = mount(AllocationLegendTable, {
      props: {
        rows: [
          row(0, 'This image', MIB, 2 * MIB),
          row(1, 'Layer 1', 2 * MIB + 4 * KIB, 4 * MIB + 4 * KIB),
          row(-3, 'Holes in layer 1 (read as zeros)', 60 * KIB, 60 * KIB),
          row(-1, 'Unallocated (reads as zeros)', 0, 0),
        ],
        zoomed: true,
        clusterSize: 64 * KIB,
      },
    })
    const cells = wrapper
      .findAll('tbody tr')
      .map((line) => line.findAll('td.number').map((cell) => cell.text()))
    expect(cells).toEqual([
      ['16 clusters · 1 MiB', '32 clusters · 2 MiB'],
      ['32 clusters + 4 KiB · 2 MiB', '64 clusters + 4 KiB · 4 MiB'],
      ['less than 1 cluster · 60 KiB', 'less than 1 cluster · 60 KiB'],
      ['0 clusters · 0 B', '0 clusters · 0 B'],
    ])
  })

  it('counts bytes alone for an image without clusters', () => {
    const wrapper = mount(AllocationLegendTable, {
      props: { rows: [row(0, 'This image', 3 * MIB, null)], zoomed: false, clusterSize: null },
    })
    expect(wrapper.get('td.number').text()).toBe('3 MiB')
  })
})
