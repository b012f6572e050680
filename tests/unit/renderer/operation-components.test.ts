// @vitest-environment jsdom
import { mount } from '@vue/test-utils'
import { beforeAll, describe, expect, it } from 'vitest'
import type { JobInfo, ResponseOf } from '../../../shared/ipc/contract'
import CommitBlastRadius from '../../../renderer/src/components/CommitBlastRadius.vue'
import OperationErrorAlert from '../../../renderer/src/components/OperationErrorAlert.vue'
import OperationJobProgress from '../../../renderer/src/components/OperationJobProgress.vue'
import { explainError } from '../../../renderer/src/lib/operation-errors'

// The operation screens' building blocks mounted in jsdom: a job's progress with its rate,
// time left and cancel button; an error with the file and value at fault and what to do; the
// blast radius of a commit with its confirmation.

const GIB = 1024 ** 3

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
})

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

describe('OperationErrorAlert', () => {
  it('shows the sentence, the file and the value at fault, and what to do', () => {
    const error = explainError({
      code: 'BASE_CHANGED',
      message: 'The base /images/base.raw changed since the overlay was made (size 8 MiB → 16 MiB)',
      path: '/images/base.raw',
      field: 'virtual size',
      value: 16777216,
    })
    const wrapper = mount(OperationErrorAlert, {
      props: { error, title: 'The commit did not run' },
      slots: { default: '<button>Commit into the base as it is now</button>' },
    })
    expect(wrapper.find('[role="alert"]').exists()).toBe(true)
    const text = wrapper.text()
    expect(text).toContain('The commit did not run')
    expect(text).toContain('(size 8 MiB → 16 MiB).')
    expect(wrapper.get('[data-middle-ellipsis]').attributes('title')).toBe('/images/base.raw')
    expect(text).toContain('virtual size')
    expect(text).toContain('16777216')
    expect(text).toContain('What you can do: If the base was changed on purpose')
    expect(wrapper.find('button').text()).toBe('Commit into the base as it is now')
  })

  it('shows a cancelled operation as cancelled, not as a failure', () => {
    const wrapper = mount(OperationErrorAlert, {
      props: {
        error: explainError({ code: 'ABORTED', message: 'The flatten was cancelled.' }),
        title: 'The flatten did not finish',
      },
    })
    expect(wrapper.text()).toContain('Cancelled')
    expect(wrapper.text()).not.toContain('did not finish')
    expect(wrapper.text()).toContain('start it again to resume')
  })
})

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
