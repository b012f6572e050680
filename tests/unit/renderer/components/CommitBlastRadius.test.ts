// @vitest-environment happy-dom
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
    overlay: '/images/mine.add-cow',
    base: '/images/base.raw',
    dependents: [
      {
        path: '/images/theirs.add-cow',
        format: 'add-cow',
        backingName: 'base.raw',
        dependsHow: 'reads',
        through: ['/images/theirs.add-cow', '/images/base.raw'],
        problem: null,
      },
      {
        path: '/images/deep.qcow2',
        format: 'qcow2',
        backingName: 'theirs.add-cow',
        dependsHow: 'reads',
        through: ['/images/deep.qcow2', '/images/theirs.add-cow', '/images/base.raw'],
        problem: null,
      },
    ],
    unchecked: [],
    searched: ['/images'],
    truncated: [],
  }

  const unreadable = {
    path: '/images/broken.add-cow',
    format: 'add-cow',
    backingName: 'base.raw',
    dependsHow: 'unknown' as const,
    through: ['/images/broken.add-cow', '/images/base.raw'],
    problem: '/images/broken.add-cow is too short for its bitmap.',
  }

  it('lists the images reading the base, also through another overlay, and asks for a confirmation', async () => {
    const wrapper = mount(CommitBlastRadius, {
      props: { radius, confirmed: false, ignoreUnchecked: false },
    })
    expect(wrapper.text()).toContain('2 other images read through this base')
    expect(wrapper.text()).toContain('through theirs.add-cow')
    expect(wrapper.text()).toContain('I understand that these 2 images will change')
    await wrapper.get('[role="checkbox"]').trigger('click')
    expect(wrapper.emitted('update:confirmed')).toEqual([[true]])
  })

  it('needs no confirmation when nothing else reads the base', () => {
    const wrapper = mount(CommitBlastRadius, {
      props: { radius: { ...radius, dependents: [] }, confirmed: false, ignoreUnchecked: false },
    })
    expect(wrapper.text()).toContain('No other image reads through this base')
    expect(wrapper.find('[role="checkbox"]').exists()).toBe(false)
  })

  it('names the images that could not be checked and counts them unless the user says so', async () => {
    const props = {
      radius: { ...radius, dependents: [], unchecked: [unreadable] },
      confirmed: false,
      ignoreUnchecked: false,
    }
    const wrapper = mount(CommitBlastRadius, { props })
    expect(wrapper.text()).toContain('1 image could not be checked')
    expect(wrapper.text()).toContain('too short for its bitmap')
    expect(wrapper.text()).toContain('I understand that this image will change')
    const boxes = wrapper.findAll('[role="checkbox"]')
    expect(boxes).toHaveLength(2)
    await boxes[0]!.trigger('click')
    expect(wrapper.emitted('update:ignoreUnchecked')).toEqual([[true]])
    await wrapper.setProps({ ignoreUnchecked: true })
    // Vouched for: nothing left to confirm.
    expect(wrapper.findAll('[role="checkbox"]')).toHaveLength(1)
    expect(wrapper.text()).not.toContain('will change')
  })
})
