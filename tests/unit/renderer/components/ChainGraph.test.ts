// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { nextTick } from 'vue'
import ChainGraph from '../../../../renderer/src/components/ChainGraph.vue'
import { buildChainGraph } from '../../../../renderer/src/lib/chain-graph'
import { stubMatchMedia } from '../helpers/dom'
import { summary } from '../helpers/fixtures'

// The chain graph's nodes are focusable buttons that say what they are and answer the
// keyboard; missing and changed links are dashed, not told by colour alone.

beforeAll(stubMatchMedia)

afterEach(() => {
  document.body.innerHTML = ''
})

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
    // A node's name comes from its content: one sentence for screen readers, the drawn text
    // (the name elided in the middle) hidden from them, so the two never disagree.
    for (const node of nodes) {
      expect(node.attributes('aria-label')).toBeUndefined()
      expect(node.find('.node-text').attributes('aria-hidden')).toBe('true')
    }
    const labels = nodes.map((node) => node.find('.visually-hidden').text())
    expect(labels).toContain('golden.img, raw · 16 MiB, no base, 2 overlays')
    expect(labels).toContain('gone.img, file not found, Missing, 1 overlay')
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
