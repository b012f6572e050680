// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { describe, expect, it } from 'vitest'
import BaseLegend from '../../../../renderer/src/components/BaseLegend.vue'
import type { LegendItem } from '../../../../renderer/src/lib/legend'

// A legend made from data: one list item a key, drawn as its swatch says, with its meaning.

const ITEMS: LegendItem[] = [
  { key: 'ok', label: 'base found', swatch: { shape: 'line', color: '#888' } },
  { key: 'changed', label: 'base changed', swatch: { shape: 'line', color: '#a60', dash: '6 4' } },
  {
    key: 'outside',
    label: 'not in the library',
    swatch: { shape: 'box', color: '#888', dash: '5 4' },
  },
  { key: 'zero', label: 'unallocated', swatch: { shape: 'fill', color: '#eee', size: 'small' } },
]

describe('BaseLegend', () => {
  it('lists every key with its swatch and its meaning', () => {
    const wrapper = mount(BaseLegend, { props: { items: ITEMS, label: 'What the lines mean' } })
    const list = wrapper.get('[role="list"]')
    expect(list.attributes('aria-label')).toBe('What the lines mean')
    const items = wrapper.findAll('[role="listitem"]')
    expect(items.map((item) => item.text())).toEqual(ITEMS.map((item) => item.label))
    expect(items[0]!.get('line').attributes('stroke')).toBe('#888')
    expect(items[0]!.get('line').attributes('stroke-dasharray')).toBeUndefined()
    expect(items[1]!.get('line').attributes('stroke-dasharray')).toBe('6 4')
    expect(items[2]!.get('rect').attributes('stroke-dasharray')).toBe('5 4')
    const fill = items[3]!.get('.swatch-fill')
    expect(fill.attributes('style')).toContain('background: #eee;')
    expect(fill.classes()).toContain('swatch-small')
    // Swatches are decoration: the words carry the meaning.
    for (const item of items) expect(item.find('[aria-hidden="true"]').exists()).toBe(true)
  })
})
