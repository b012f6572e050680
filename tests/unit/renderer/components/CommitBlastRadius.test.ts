// @vitest-environment jsdom
import { mount } from '@vue/test-utils'
import { beforeAll, describe, expect, it } from 'vitest'
import type { ResponseOf } from '../../../../shared/ipc/contract'
import CommitBlastRadius from '../../../../renderer/src/components/CommitBlastRadius.vue'
import { stubMatchMedia } from '../helpers/dom'

// The blast radius of a commit, with its confirmation.

beforeAll(stubMatchMedia)

describe('CommitBlastRadius', () => {
  type Radius = ResponseOf<'image:get-blast-radius'>
  const radius: Radius = {
    base: '/images/base.raw',
    dependents: [
      { path: '/images/theirs.add-cow', format: 'add-cow', backingName: 'base.raw' },
      { path: '/images/other.qcow2', format: 'qcow2', backingName: '/images/base.raw' },
    ],
    searched: ['/images'],
    truncated: [],
  }

  it('lists the images on the base and asks for a confirmation', async () => {
    const wrapper = mount(CommitBlastRadius, { props: { radius, confirmed: false } })
    expect(wrapper.text()).toContain('2 other images use this base')
    expect(wrapper.text()).toContain('I understand that these 2 images will change')
    await wrapper.get('[role="checkbox"]').trigger('click')
    expect(wrapper.emitted('update:confirmed')).toEqual([[true]])
  })

  it('needs no confirmation when nothing else uses the base', () => {
    const wrapper = mount(CommitBlastRadius, {
      props: { radius: { ...radius, dependents: [] }, confirmed: false },
    })
    expect(wrapper.text()).toContain('No other image uses this base')
    expect(wrapper.find('[role="checkbox"]').exists()).toBe(false)
  })
})
