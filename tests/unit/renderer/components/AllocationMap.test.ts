// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { nextTick } from 'vue'
import AllocationMap from '../../../../renderer/src/components/AllocationMap.vue'
import {
  depthColor,
  LIGHT_PALETTE,
  MAX_BUCKETS,
  type Allocation,
} from '../../../../renderer/src/lib/allocation'
import { recordCanvas, stubMatchMedia, stubResizeObserver, type Fill } from '../helpers/dom'
import { KIB, MIB } from '../helpers/fixtures'

// The allocation map draws every bucket, reads a cell's offsets on hover and zooms from the
// keyboard. The test DOM has no canvas, matchMedia or ResizeObserver: the map draws into a recording
// 2D context instead.

let fills: Fill[] = []
let restore = (): void => undefined

beforeAll(() => {
  stubMatchMedia()
  stubResizeObserver()
  ;({ fills, restore } = recordCanvas(1050))
})

afterAll(() => restore())

afterEach(() => {
  document.body.innerHTML = ''
})

describe('AllocationMap', () => {
  /** A 32 MiB overlay of 64 KiB clusters, one bucket per cluster; the first MiB written. */
  function allocation(): Allocation {
    const buckets = Array.from({ length: 512 }, (_, index) =>
      index < 16 ? { present: [64 * KIB, 0], zero: 0 } : { present: [0, 64 * KIB], zero: 0 },
    )
    return {
      virtualSize: 32 * MIB,
      clusterSize: 64 * KIB,
      offset: 0,
      length: 32 * MIB,
      bucketSize: 64 * KIB,
      layers: [
        { depth: 0, path: '/vm/o.add-cow', format: 'add-cow' },
        { depth: 1, path: '/vm/golden.img', format: 'raw' },
      ],
      buckets,
      totals: { present: [MIB, 31 * MIB], zero: 0 },
    }
  }

  it('draws every bucket and reports the time it took', async () => {
    const wrapper = mount(AllocationMap, {
      props: {
        allocation: allocation(),
        clusterSize: 64 * KIB,
        layerNames: ['o.add-cow', 'golden.img'],
      },
    })
    await nextTick()
    const background = fills.filter((fill) => fill.style === LIGHT_PALETTE.unallocated)
    expect(background).toHaveLength(512)
    expect(fills.filter((fill) => fill.style === depthColor(LIGHT_PALETTE, 0))).toHaveLength(16)
    expect(fills.filter((fill) => fill.style === depthColor(LIGHT_PALETTE, 1))).toHaveLength(496)
    const canvas = wrapper.find('canvas')
    expect(canvas.attributes('data-cells')).toBe('512')
    expect(Number(canvas.attributes('data-draw-ms'))).toBeGreaterThanOrEqual(0)
    expect(wrapper.emitted('drawn')?.length).toBeGreaterThan(0)
    expect(canvas.attributes('aria-label')).toBe(
      'Allocation map: 512 cells of 64 KiB covering 32 MiB. Arrow keys move between cells, Enter zooms in, minus zooms out.',
    )
  })

  it('shows a cell’s offsets and contents on hover', async () => {
    const wrapper = mount(AllocationMap, {
      props: {
        allocation: allocation(),
        clusterSize: 64 * KIB,
        layerNames: ['o.add-cow', 'golden.img'],
      },
    })
    await nextTick()
    // Cell 17 (index 16): the second row starts at 70 cells of 15 px; index 16 is x = 16 * 15.
    await wrapper.find('canvas').trigger('mousemove', { clientX: 16 * 15 + 3, clientY: 3 })
    const tooltip = wrapper.find('.tooltip')
    expect(tooltip.text()).toContain('Cell 17 of 512')
    expect(tooltip.text()).toContain('0x100000 – 0x10ffff')
    expect(tooltip.text()).toContain('Layer 1 (golden.img)')
    expect(tooltip.text()).toContain('64 KiB · 1 cluster')
    await wrapper.find('canvas').trigger('mouseleave')
    expect(wrapper.find('.tooltip').exists()).toBe(false)
  })

  it('moves a cursor with the arrow keys and zooms with Enter and minus', async () => {
    const wrapper = mount(AllocationMap, {
      props: {
        allocation: allocation(),
        clusterSize: 64 * KIB,
        layerNames: ['o.add-cow', 'golden.img'],
      },
    })
    await nextTick()
    const canvas = wrapper.find('canvas')
    await canvas.trigger('focus')
    await canvas.trigger('keydown', { key: 'ArrowDown' })
    const details = wrapper.find('#allocation-cell-details')
    // One row down from the first cell: cell 71 (70 cells a row), past the written first MiB.
    expect(details.text()).toContain('Cell 71 of 512: 0x460000 – 0x46ffff')
    expect(details.text()).toContain('Layer 1 (golden.img) 64 KiB · 1 cluster')
    await canvas.trigger('keydown', { key: 'Home' })
    expect(details.text()).toContain('This image 64 KiB · 1 cluster')
    await canvas.trigger('keydown', { key: 'End' })
    expect(details.text()).toContain('Cell 512 of 512: 0x1ff0000 – 0x1ffffff')
    await canvas.trigger('keydown', { key: 'Enter' })
    await canvas.trigger('keydown', { key: '-' })
    expect(wrapper.emitted('zoom')).toEqual([[511]])
    expect(wrapper.emitted('zoom-out')).toHaveLength(1)
  })

  it('draws a full map of the most buckets main gives', async () => {
    const big = allocation()
    big.buckets = Array.from({ length: MAX_BUCKETS }, (_, index) => ({
      present: [index % 97 === 0 ? 64 * KIB : 0, 0],
      zero: 256 * MIB - (index % 97 === 0 ? 64 * KIB : 0),
    }))
    mount(AllocationMap, { props: { allocation: big, clusterSize: 64 * KIB, layerNames: [] } })
    await nextTick()
    expect(fills.filter((fill) => fill.style === LIGHT_PALETTE.unallocated)).toHaveLength(
      MAX_BUCKETS,
    )
    expect(fills.filter((fill) => fill.style === depthColor(LIGHT_PALETTE, 0))).toHaveLength(
      Math.ceil(MAX_BUCKETS / 97),
    )
  })
})
