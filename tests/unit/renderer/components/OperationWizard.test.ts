// @vitest-environment happy-dom
import { flushPromises, mount } from '@vue/test-utils'
import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { defineComponent, h, ref } from 'vue'
import { CHANNELS } from '../../../../shared/ipc/channels'
import OperationWizard from '../../../../renderer/src/components/OperationWizard.vue'
import { useOperationJob } from '../../../../renderer/src/composables/use-operation-job'
import { useOperationPlan } from '../../../../renderer/src/composables/use-operation-plan'
import { useWizardSteps } from '../../../../renderer/src/composables/use-wizard-steps'
import { stubMatchMedia } from '../helpers/dom'
import { installFakeMain, settle, type FakeMain } from '../helpers/fake-main'

// The shell every operation wizard stands on, driven as a user would: the steps and their
// moves, a confirmation that gates every step after it, the job's progress and Cancel, its
// error (with "go on with the base as it is now"), its result on the 'done' step, starting
// over, a plan that cannot be read, and focus that follows keyboard moves.

let main: FakeMain

beforeAll(() => {
  stubMatchMedia()
  main = installFakeMain()
  main.handle('libraryListImages', () => ({
    images: [],
    warning: null,
    version: 'v1',
    since: null,
    order: null,
  }))
  main.acceptJobs('operationsStreamOverlay')
})

beforeEach(() => {
  setActivePinia(createPinia())
  main.jobs.length = 0
})

afterEach(() => {
  document.body.innerHTML = ''
})

/** A flatten-like wizard: review, a confirmation, run, done; the plan is read by `read`. */
function harness(read: (path: string) => Promise<string>) {
  const state = {
    confirmed: ref(false),
    restarts: 0,
    runs: [] as { acceptBase: boolean }[],
  }
  const Harness = defineComponent({
    setup() {
      const image = ref<string | null>('/vm/flat.add-cow')
      const operation = useOperationJob(CHANNELS.operationsStreamOverlay)
      const plan = useOperationPlan(image, (_client, path) => read(path))
      const wizard = useWizardSteps(() => [
        { key: 'review', title: 'Review', description: 'What will be copied' },
        {
          key: 'confirm',
          title: 'Confirm',
          blocked: state.confirmed.value ? null : 'Confirm first.',
        },
        { key: 'run', title: 'Flatten', heading: 'Ready to flatten' },
        { key: 'done', title: 'Done' },
      ])
      return () =>
        h(
          OperationWizard,
          {
            title: 'Flatten',
            subtitle: 'Copy the base into the overlay.',
            image: image.value,
            wizard,
            plan,
            operation,
            runLabel: 'Flatten',
            baseChangedLabel: 'Flatten from the base as it is now',
            onRun: (options: { acceptBase: boolean }) => {
              state.runs.push(options)
              void operation.run({ overlay: '/vm/flat.add-cow', acceptBase: options.acceptBase })
            },
            onRestart: () => state.restarts++,
          },
          {
            review: () => h('p', { class: 'review' }, `Plan: ${String(plan.plan.value)}`),
            confirm: () => h('p', 'Tick to confirm'),
            run: () => h('p', { class: 'summary' }, 'Copy 8 MiB.'),
            result: ({ result }: { result: { clusters: number } }) =>
              h('p', { class: 'result' }, `Copied ${result.clusters} clusters`),
            finish: () => h('button', { class: 'launch' }, 'Launch'),
          },
        )
    },
  })
  const wrapper = mount(Harness, { attachTo: document.body })
  return { wrapper, state }
}

function button(wrapper: ReturnType<typeof mount>, text: string) {
  const found = wrapper.findAll('button').find((candidate) => candidate.text() === text)
  if (!found) throw new Error(`no button "${text}" in: ${wrapper.text()}`)
  return found
}

function hasButton(wrapper: ReturnType<typeof mount>, text: string): boolean {
  return wrapper.findAll('button').some((candidate) => candidate.text() === text)
}

/** Confirm, go to the run step and start the job. */
async function runFromStart(
  wrapper: ReturnType<typeof mount>,
  state: ReturnType<typeof harness>['state'],
): Promise<void> {
  state.confirmed.value = true
  await settle()
  await button(wrapper, 'Next').trigger('click')
  await button(wrapper, 'Next').trigger('click')
  await button(wrapper, 'Flatten').trigger('click')
  await settle()
}

const disabled = (element: { attributes(name: string): string | undefined }): boolean =>
  element.attributes('disabled') !== undefined

describe('OperationWizard', () => {
  it('moves through the steps, a confirmation gating every step after it', async () => {
    const { wrapper, state } = harness(async () => 'copy 8 MiB')
    await settle()
    expect(wrapper.get('h1').text()).toBe('Flatten')
    expect(wrapper.get('section').attributes('aria-labelledby')).toBe('flatten-title')
    expect(wrapper.get('nav').attributes('aria-label')).toBe('Flatten steps')
    expect(wrapper.get('[aria-live="polite"]').text()).toBe('Step 1 of 4: Review')
    expect(wrapper.get('[role="region"]').attributes('aria-label')).toBe('Review')
    expect(wrapper.get('.review').text()).toBe('Plan: copy 8 MiB')
    expect(hasButton(wrapper, 'Back')).toBe(false)

    await button(wrapper, 'Next').trigger('click')
    expect(wrapper.get('[aria-live="polite"]').text()).toBe('Step 2 of 4: Confirm')
    expect(disabled(button(wrapper, 'Next'))).toBe(true)
    await button(wrapper, 'Next').trigger('click')
    expect(wrapper.get('[role="region"]').attributes('aria-label')).toBe('Confirm')

    state.confirmed.value = true
    await settle()
    expect(disabled(button(wrapper, 'Next'))).toBe(false)
    await button(wrapper, 'Next').trigger('click')
    expect(wrapper.get('[role="region"]').attributes('aria-label')).toBe('Ready to flatten')
    expect(wrapper.get('.summary').text()).toBe('Copy 8 MiB.')
    expect(disabled(button(wrapper, 'Flatten'))).toBe(false)

    // Withdrawn, the confirmation blocks the run step too, and the way back to it.
    state.confirmed.value = false
    await settle()
    expect(disabled(button(wrapper, 'Flatten'))).toBe(true)
    await button(wrapper, 'Back').trigger('click')
    expect(disabled(button(wrapper, 'Next'))).toBe(true)
    expect(state.runs).toEqual([])
  })

  it('runs the job with its progress and Cancel, and shows a cancel as such', async () => {
    const { wrapper, state } = harness(async () => 'plan')
    await runFromStart(wrapper, state)
    expect(state.runs).toEqual([{ acceptBase: false }])
    const job = main.jobs[0]!
    expect(job.request).toEqual({ overlay: '/vm/flat.add-cow', acceptBase: false })
    main.progress(job, 4 * 1024 ** 2, 8 * 1024 ** 2)
    await settle()
    const progress = wrapper.get('[role="group"][aria-label="Flatten in progress"]')
    expect(progress.text()).toContain('4 MiB of 8 MiB')
    // While the job runs nothing else may move.
    expect(disabled(button(wrapper, 'Back'))).toBe(true)
    expect(disabled(button(wrapper, 'Flatten'))).toBe(true)

    await wrapper.get('button[aria-label="Cancel the flatten"]').trigger('click')
    await settle()
    expect(main.calls.at(-1)).toEqual({ key: 'jobsCancelJob', request: { jobId: job.info.id } })
    main.fail(job, { code: 'ABORTED', message: 'The flatten was cancelled.' })
    await settle()
    expect(wrapper.find('[aria-label="Flatten in progress"]').exists()).toBe(false)
    const alert = wrapper.get('[role="alert"]')
    expect(alert.text()).toContain('Cancelled')
    expect(alert.text()).not.toContain('did not finish')
    expect(wrapper.get('[role="region"]').attributes('aria-label')).toBe('Ready to flatten')
    expect(disabled(button(wrapper, 'Flatten'))).toBe(false)
  })

  it('offers to go on with a changed base, then shows the result on the done step', async () => {
    let reads = 0
    const { wrapper, state } = harness(async () => `plan ${++reads}`)
    await runFromStart(wrapper, state)
    main.fail(main.jobs[0]!, {
      code: 'BASE_CHANGED',
      message: 'The base /vm/base.raw changed since the overlay was made',
      path: '/vm/base.raw',
    })
    await settle()
    const alert = wrapper.get('[role="alert"]')
    expect(alert.text()).toContain('The flatten did not finish')
    expect(alert.text()).toContain('The base /vm/base.raw changed since the overlay was made.')
    expect(wrapper.get('.n-steps').classes().join(' ')).not.toContain('finish')

    await button(wrapper, 'Flatten from the base as it is now').trigger('click')
    await settle()
    expect(state.runs).toEqual([{ acceptBase: false }, { acceptBase: true }])
    expect(main.jobs[1]!.request).toEqual({ overlay: '/vm/flat.add-cow', acceptBase: true })
    main.finish(main.jobs[1]!, {
      overlay: '/vm/flat.add-cow',
      clusters: 127,
      copiedBytes: 3 * 1024 ** 2,
      zeroBytes: 0,
      alreadyDone: false,
    })
    await settle()
    expect(wrapper.get('[role="region"]').attributes('aria-label')).toBe('Done')
    expect(wrapper.get('[role="status"][aria-label="Flatten result"]').text()).toBe(
      'Copied 127 clusters',
    )
    expect(wrapper.get('[aria-live="polite"]').text()).toBe('Step 4 of 4: Done')
    expect(hasButton(wrapper, 'Back')).toBe(false)
    expect(wrapper.find('button.launch').exists()).toBe(true)

    // Starting over: back to the first step, the job forgotten, the plan read again.
    expect(reads).toBe(1)
    await button(wrapper, 'Review again').trigger('click')
    await settle()
    expect(state.restarts).toBe(1)
    expect(reads).toBe(2)
    expect(wrapper.get('.review').text()).toBe('Plan: plan 2')
    expect(wrapper.get('[aria-live="polite"]').text()).toBe('Step 1 of 4: Review')
    expect(wrapper.find('[role="alert"]').exists()).toBe(false)
    expect(wrapper.find('[role="status"][aria-label="Flatten result"]').exists()).toBe(false)
  })

  it('says when the plan cannot be read, and tries again', async () => {
    let attempts = 0
    const { wrapper } = harness(async () => {
      attempts++
      if (attempts === 1) throw { code: 'NOT_FOUND', message: 'No file /vm/flat.add-cow' }
      return 'found it'
    })
    await settle()
    const alert = wrapper.get('[role="alert"]')
    expect(alert.text()).toContain('The overlay could not be read')
    expect(alert.text()).toContain('No file /vm/flat.add-cow.')
    expect(wrapper.find('[role="region"]').exists()).toBe(false)
    expect(disabled(button(wrapper, 'Next'))).toBe(true)
    await button(wrapper, 'Try again').trigger('click')
    await settle()
    expect(attempts).toBe(2)
    expect(wrapper.get('.review').text()).toBe('Plan: found it')
    expect(disabled(button(wrapper, 'Next'))).toBe(false)
  })

  it('keeps Next disabled until the plan is read', async () => {
    let answer: (plan: string) => void = () => undefined
    const { wrapper } = harness(() => new Promise<string>((resolve) => (answer = resolve)))
    await settle()
    expect(disabled(button(wrapper, 'Next'))).toBe(true)
    answer('late')
    await settle()
    expect(disabled(button(wrapper, 'Next'))).toBe(false)
  })

  it('puts the focus on the next action when a keyboard move removes the focused button', async () => {
    const { wrapper, state } = harness(async () => 'plan')
    state.confirmed.value = true
    await settle()
    // A click made with Enter or Space has detail 0, as @vue/test-utils' trigger makes it.
    ;(button(wrapper, 'Next').element as HTMLElement).focus()
    await button(wrapper, 'Next').trigger('click')
    await button(wrapper, 'Next').trigger('click')
    await flushPromises()
    expect(document.activeElement?.textContent?.trim()).toBe('Flatten')
    await button(wrapper, 'Flatten').trigger('click')
    await settle()
    expect(document.activeElement?.getAttribute('aria-label')).toBe('Cancel the flatten')
    main.finish(main.jobs[0]!, {
      overlay: '/vm/flat.add-cow',
      clusters: 1,
      copiedBytes: 65536,
      zeroBytes: 0,
      alreadyDone: false,
    })
    await settle()
    expect(document.activeElement?.textContent?.trim()).toBe('Review again')
  })
})
