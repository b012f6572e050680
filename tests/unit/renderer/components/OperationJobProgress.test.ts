// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { beforeAll, describe, expect, it } from 'vitest'
import type { JobInfo } from '../../../../shared/ipc/contract'
import OperationJobProgress from '../../../../renderer/src/components/OperationJobProgress.vue'
import { stubMatchMedia } from '../helpers/dom'

// A job's progress with its rate, time left and cancel button.

const GIB = 1024 ** 3

beforeAll(stubMatchMedia)

function job(state: JobInfo['state'], done: number): JobInfo {
  return {
    id: 'job-1',
    channel: 'operations:commit-overlay',
    title: 'Commit vm.add-cow into its base',
    state,
    startedAt: 0,
    finishedAt: null,
    progress: {
      done,
      total: 16 * GIB,
      unit: 'bytes',
      fraction: done / (16 * GIB),
      bytesPerSecond: 512 * 1024 ** 2,
      secondsLeft: 95,
    },
    detail: null,
    error: null,
  }
}

describe('OperationJobProgress', () => {
  it('shows how far the job got, its rate and time left, and asks to cancel it', async () => {
    const wrapper = mount(OperationJobProgress, {
      props: { job: job('running', 4 * GIB), label: 'Commit' },
    })
    expect(wrapper.attributes('aria-label')).toBe('Commit in progress')
    expect(wrapper.text()).toContain('4 GiB of 16 GiB')
    expect(wrapper.text()).toContain('512 MiB/s · 1 min 35 s left')
    const cancel = wrapper.get('button[aria-label="Cancel the commit"]')
    expect(cancel.attributes('disabled')).toBeUndefined()
    await cancel.trigger('click')
    expect(wrapper.emitted('cancel')).toHaveLength(1)
  })

  it('says the files are being left consistent while it cancels, and cannot be cancelled twice', () => {
    const wrapper = mount(OperationJobProgress, {
      props: { job: job('cancelling', 4 * GIB), label: 'Commit' },
    })
    expect(wrapper.text()).toContain('Cancelling… the files are being left consistent.')
    expect(
      wrapper.get('button[aria-label="Cancel the commit"]').attributes('disabled'),
    ).toBeDefined()
  })

  it('waits for the job before it can be cancelled', () => {
    const wrapper = mount(OperationJobProgress, { props: { job: null, label: 'Flatten' } })
    expect(wrapper.text()).toContain('Starting…')
    expect(
      wrapper.get('button[aria-label="Cancel the flatten"]').attributes('disabled'),
    ).toBeDefined()
  })
})
