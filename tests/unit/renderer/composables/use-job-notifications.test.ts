// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { NNotificationProvider } from 'naive-ui'
import { createPinia } from 'pinia'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { defineComponent, h } from 'vue'
import { createMemoryHistory, createRouter } from 'vue-router'
import {
  LONG_JOB_MS,
  useJobNotifications,
} from '../../../../renderer/src/composables/use-job-notifications'
import { useJobsStore } from '../../../../renderer/src/stores/jobs'
import { stubMatchMedia } from '../helpers/dom'
import { installFakeMain, settle, type FakeMain } from '../helpers/fake-main'

// The notification at the end of a long job (renderer/src/composables/use-job-notifications.ts):
// a job that ran LONG_JOB_MS or more is announced with its duration and a link to its image; a
// short one is not.

let main: FakeMain

beforeAll(() => {
  stubMatchMedia()
  main = installFakeMain()
  main.acceptJobs('operationsCheckImage')
})

afterEach(() => {
  document.body.innerHTML = ''
})

const Listener = defineComponent({
  setup() {
    useJobNotifications()
    return () => h('div')
  },
})

async function mountShell() {
  const router = createRouter({
    history: createMemoryHistory(),
    routes: [
      { path: '/', component: { render: () => h('div') } },
      { path: '/chain', name: 'chain', component: { render: () => h('div') } },
    ],
  })
  await router.push('/')
  const pinia = createPinia()
  const wrapper = mount(NNotificationProvider, {
    slots: { default: () => h(Listener) },
    global: { plugins: [pinia, router] },
    attachTo: document.body,
  })
  await settle()
  return { wrapper, pinia }
}

describe('useJobNotifications', () => {
  it('announces a long job with its duration and image, and not a short one', async () => {
    await mountShell()
    const jobs = useJobsStore()
    // What the jobs resolve with is not this test's business (the fake results are empty).
    for (const path of ['/vm/a.add-cow', '/vm/b.add-cow']) {
      const started = await jobs.start('operations:check-image', { path, acceptBase: false })
      started.result.catch(() => undefined)
    }
    const [short, long] = main.jobs.slice(-2)
    main.finish(short!, { report: {}, exitCode: 0 })
    await settle()
    expect(document.body.textContent).not.toContain('finished')

    long!.info.startedAt = 1 - LONG_JOB_MS - 2000
    long!.info.image = '/vm/b.add-cow'
    main.finish(long!, { report: {}, exitCode: 0 })
    await settle()
    const text = document.body.textContent ?? ''
    expect(text).toContain(`${long!.info.title} finished`)
    expect(text).toContain('After 12 s.')
    expect(text).toContain('Show the image')
  })
})
