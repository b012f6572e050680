// @vitest-environment jsdom
import { mount } from '@vue/test-utils'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { nextTick } from 'vue'
import type { ImageInfo } from '../../../shared/image-types'
import type { ImageSummary } from '../../../shared/ipc/contract'
import AllocationMap from '../../../renderer/src/components/AllocationMap.vue'
import BaseMiddleEllipsis from '../../../renderer/src/components/BaseMiddleEllipsis.vue'
import ChainGraph from '../../../renderer/src/components/ChainGraph.vue'
import ChainGraphLayers from '../../../renderer/src/components/ChainGraphLayers.vue'
import {
  depthColor,
  LIGHT_PALETTE,
  MAX_BUCKETS,
  type Allocation,
} from '../../../renderer/src/lib/allocation'
import { buildChainGraph } from '../../../renderer/src/lib/chain-graph'

// The image views' components mounted in jsdom: the middle ellipsis keeps the whole path in
// the DOM, the chain graph's nodes are focusable buttons that say what they are and answer the
// keyboard, the chain list shows names as stored and resolved, and the allocation map draws
// every bucket, reads a cell's offsets on hover and zooms from the keyboard. jsdom has no
// canvas, matchMedia or ResizeObserver: the map draws into a recording 2D context instead.

const KIB = 1024
const MIB = 1024 * KIB

interface Fill {
  style: string
  x: number
  y: number
  width: number
  height: number
}

const fills: Fill[] = []
const saved = {
  getContext: HTMLCanvasElement.prototype.getContext,
  clientWidth: Object.getOwnPropertyDescriptor(HTMLElement.prototype, 'clientWidth'),
}

beforeAll(() => {
  window.matchMedia = (query: string) =>
    ({
      matches: false,
      media: query,
      onchange: null,
      addEventListener: () => undefined,
      removeEventListener: () => undefined,
      addListener: () => undefined,
      removeListener: () => undefined,
      dispatchEvent: () => false,
    }) as MediaQueryList
  globalThis.ResizeObserver = class {
    constructor(private readonly callback: ResizeObserverCallback) {}
    observe(): void {
      this.callback([], this as unknown as ResizeObserver)
    }
    unobserve(): void {}
    disconnect(): void {}
  }
  Object.defineProperty(HTMLElement.prototype, 'clientWidth', {
    configurable: true,
    get: () => 1050,
  })
  const context = {
    fillStyle: '',
    strokeStyle: '',
    lineWidth: 1,
    setTransform: () => undefined,
    clearRect: () => {
      fills.length = 0
    },
    fillRect(x: number, y: number, width: number, height: number) {
      fills.push({ style: String(this.fillStyle), x, y, width, height })
    },
    strokeRect: () => undefined,
  }
  HTMLCanvasElement.prototype.getContext = (() =>
    context) as unknown as typeof HTMLCanvasElement.prototype.getContext
})

afterAll(() => {
  HTMLCanvasElement.prototype.getContext = saved.getContext
  if (saved.clientWidth)
    Object.defineProperty(HTMLElement.prototype, 'clientWidth', saved.clientWidth)
})

afterEach(() => {
  document.body.innerHTML = ''
})

describe('BaseMiddleEllipsis', () => {
  it('keeps the whole path in the DOM, the file name apart, and the path on hover', () => {
    const wrapper = mount(BaseMiddleEllipsis, {
      props: { text: '/very/long/folder/name/golden-overlay.add-cow' },
    })
    expect(wrapper.text()).toBe('/very/long/folder/name/golden-overlay.add-cow')
    expect(wrapper.find('.head').text()).toBe('/very/long/folder/name')
    expect(wrapper.find('.tail').text()).toBe('/golden-overlay.add-cow')
    expect(wrapper.attributes('title')).toBe('/very/long/folder/name/golden-overlay.add-cow')
  })

  it('takes a hover text and a tail length', () => {
    const wrapper = mount(BaseMiddleEllipsis, {
      props: { text: 'abcdefghij', tail: 4, title: 'the whole thing', monospace: true },
    })
    expect(wrapper.find('.tail').text()).toBe('ghij')
    expect(wrapper.attributes('title')).toBe('the whole thing')
    expect(wrapper.classes()).toContain('monospace')
  })
})

function summary(path: string, overrides: Partial<ImageSummary> = {}): ImageSummary {
  return {
    path,
    name: path.split('/').pop() ?? path,
    addedAt: '2025-01-01T00:00:00.000Z',
    format: 'add-cow',
    virtualSize: 16 * MIB,
    diskUsage: 0,
    files: [],
    clusterSize: 64 * KIB,
    allocatedPercent: 0,
    base: { status: 'none', stored: null, path: null, reason: null },
    chainLength: 1,
    dependents: [],
    error: null,
    ...overrides,
  }
}

describe('ChainGraph', () => {
  const images = [
    summary('/vm/golden.img', {
      format: 'raw',
      dependents: ['/vm/a.add-cow', '/vm/b.add-cow'],
    }),
    summary('/vm/a.add-cow', {
      base: { status: 'ok', stored: 'golden.img', path: '/vm/golden.img', reason: 'inside-folder' },
    }),
    summary('/vm/b.add-cow', {
      base: {
        status: 'changed',
        stored: 'golden.img',
        path: '/vm/golden.img',
        reason: 'inside-folder',
      },
    }),
    summary('/x/orphan.add-cow', {
      base: { status: 'missing', stored: 'gone.img', path: '/x/gone.img', reason: 'missing' },
    }),
  ]

  it('draws every image as a focusable button with what it is', () => {
    const graph = buildChainGraph(images)
    const wrapper = mount(ChainGraph, { props: { graph, selected: '/vm/a.add-cow' } })
    const nodes = wrapper.findAll('g[role="button"]')
    expect(nodes).toHaveLength(5)
    for (const node of nodes) expect(node.attributes('tabindex')).toBe('0')
    const labels = nodes.map((node) => node.attributes('aria-label'))
    expect(labels).toContain('golden.img, raw · 16 MiB, no base, 2 overlays')
    expect(labels).toContain('gone.img, file not found, 1 overlay')
    const selected = wrapper.find('g[aria-pressed="true"]')
    expect(selected.attributes('data-path')).toBe('/vm/a.add-cow')
    expect(wrapper.find('g[data-path="/vm/b.add-cow"]').text()).toContain('Base changed')
    expect(wrapper.find('g[data-path="/x/gone.img"]').text()).toContain('Missing')
    expect(
      wrapper
        .findAll('path.edge')
        .map((edge) => edge.attributes('data-status'))
        .sort(),
    ).toEqual(['changed', 'missing', 'ok'])
    // Missing and changed links are dashed, not told by colour alone.
    expect(wrapper.find('path[data-status="missing"]').attributes('stroke-dasharray')).toBeTruthy()
    expect(wrapper.find('path[data-status="ok"]').attributes('stroke-dasharray')).toBeUndefined()
  })

  it('selects on click and Enter, and moves focus with the arrow keys', async () => {
    const graph = buildChainGraph(images)
    const wrapper = mount(ChainGraph, {
      props: { graph, selected: null },
      attachTo: document.body,
    })
    await wrapper.find('g[data-path="/vm/b.add-cow"]').trigger('click')
    const golden = wrapper.find('g[data-path="/vm/golden.img"]')
    await golden.trigger('keydown', { key: 'Enter' })
    expect(wrapper.emitted('select')).toEqual([['/vm/b.add-cow'], ['/vm/golden.img']])
    await golden.trigger('keydown', { key: 'ArrowRight' })
    await nextTick()
    expect(document.activeElement?.getAttribute('data-path')).toBe('/vm/a.add-cow')
    await wrapper.find('g[data-path="/vm/a.add-cow"]').trigger('keydown', { key: 'ArrowDown' })
    await nextTick()
    expect(document.activeElement?.getAttribute('data-path')).toBe('/vm/b.add-cow')
    wrapper.unmount()
  })
})

describe('ChainGraphLayers', () => {
  const layers: ImageInfo[] = [
    {
      filename: '/vm/a.add-cow',
      format: 'add-cow',
      'virtual-size': 16 * MIB,
      'actual-size': 128 * KIB,
      'cluster-size': 64 * KIB,
      'backing-filename': 'golden.img',
      'full-backing-filename': '/vm/golden.img',
      'data-file': 'a.raw',
      'full-data-file': '/vm/a.raw',
      'allocated-clusters': 16,
      'total-clusters': 256,
      names: [
        {
          stored: 'a.raw',
          resolved: '/vm/a.raw',
          format: 'raw',
          followed: true,
          reason: 'inside-folder',
        },
        {
          stored: 'golden.img',
          resolved: '/vm/golden.img',
          format: 'raw',
          followed: true,
          reason: 'inside-folder',
        },
      ],
    },
    {
      filename: '/vm/golden.img',
      format: 'raw',
      'virtual-size': 16 * MIB,
      'actual-size': 6 * MIB,
    },
  ]

  it('lists the chain top to base with every name as stored and resolved', () => {
    const wrapper = mount(ChainGraphLayers, { props: { layers } })
    const items = wrapper.findAll('ol > li')
    expect(items).toHaveLength(2)
    expect(items[0]!.text()).toContain('Top')
    expect(items[0]!.text()).toContain('16 of 256 clusters')
    expect(items[1]!.text()).toContain('Base')
    const names = items[0]!.findAll('.names > li')
    // The base's name first, then the image file's.
    expect(names[0]!.text()).toContain('Base')
    expect(names[0]!.text()).toContain('golden.img')
    expect(names[0]!.text()).toContain('/vm/golden.img')
    expect(names[0]!.text()).toContain('Followed: it stays inside the folder')
    expect(names[1]!.text()).toContain('Image file')
    expect(wrapper.find('[role="note"]').exists()).toBe(false)
  })

  it('says where and why the chain stops at a name it does not follow', () => {
    const refused: ImageInfo = {
      ...layers[0]!,
      names: [
        {
          stored: 'golden.img',
          resolved: '/vm/golden.img',
          format: 'raw',
          followed: false,
          reason: 'outside-folder',
        },
      ],
    }
    const wrapper = mount(ChainGraphLayers, { props: { layers: [refused] } })
    expect(wrapper.text()).toContain('Not followed')
    expect(wrapper.find('[role="note"]').text()).toBe(
      'The chain stops here: the base name “golden.img” is not followed because it leaves the folder and the library does not trust it.',
    )
  })
})

describe('AllocationMap', () => {
  /** A 32 MiB overlay of 64 KiB clusters, one bucket per cluster; the first MiB written. */
  function allocation(): Allocation {
    const buckets = Array.from({ length: 512 }, (_, index) =>
      index < 16 ? { present: [64 * KIB, 0], zero: 0 } : { present: [0, 64 * KIB], zero: 0 },
    )
    return {
      virtualSize: 32 * MIB,
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
