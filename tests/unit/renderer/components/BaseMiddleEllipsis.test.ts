// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { describe, expect, it } from 'vitest'
import BaseMiddleEllipsis from '../../../../renderer/src/components/BaseMiddleEllipsis.vue'

// The middle ellipsis keeps the whole path in the DOM, with the file name apart.

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
