// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { createPinia } from 'pinia'
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import { createMemoryHistory, createRouter } from 'vue-router'
import CommitView from '../../../../renderer/src/views/CommitView.vue'
import { stubMatchMedia } from '../helpers/dom'
import { installFakeMain, settle, type FakeMain } from '../helpers/fake-main'
import { MIB } from '../helpers/fixtures'

// The commit screen over a fake main: what will be written, the images on the same base
// (confirmed before anything else may happen), the undo journal's path, the commit job with
// what it did, "Roll back this commit", and another image joining the base meanwhile.

const OVERLAY = '/vm/mine.add-cow'
const THEIRS = {
  path: '/vm/theirs.add-cow',
  format: 'add-cow',
  backingName: 'base.raw',
  dependsHow: 'reads' as const,
  through: ['/vm/theirs.add-cow', '/vm/base.raw'],
  problem: null,
}

let main: FakeMain
let dependents = [THEIRS]

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
  main.handle('imageGetInfo', () => ({
    layers: [
      {
        filename: OVERLAY,
        format: 'add-cow',
        'virtual-size': 16 * MIB,
        'actual-size': 65536,
        'cluster-size': 65536,
        'backing-filename': 'base.raw',
        'full-backing-filename': '/vm/base.raw',
        'backing-filename-format': 'raw',
        'allocated-clusters': 2,
        'total-clusters': 256,
        'all-allocated': false,
      },
      { filename: '/vm/base.raw', format: 'raw', 'virtual-size': 16 * MIB, 'actual-size': 0 },
    ],
  }))
  main.handle('imageGetAllocation', () => ({
    virtualSize: 16 * MIB,
    clusterSize: 65536,
    offset: 0,
    length: 16 * MIB,
    bucketSize: 16 * MIB,
    layers: [],
    buckets: [{ present: [131072, 16 * MIB - 131072], zero: 0 }],
    totals: { present: [131072, 16 * MIB - 131072], zero: 0 },
  }))
  main.handle('imageGetBlastRadius', () => ({
    overlay: OVERLAY,
    base: '/vm/base.raw',
    dependents,
    unchecked: [],
    searched: ['/vm'],
    truncated: [],
  }))
  main.acceptJobs('operationsCommitOverlay')
  main.acceptJobs('operationsRollbackCommit')
})

beforeEach(() => {
  dependents = [THEIRS]
  main.jobs.length = 0
})

afterEach(() => {
  document.body.innerHTML = ''
})

async function open() {
  const router = createRouter({
    history: createMemoryHistory(),
    routes: [{ path: '/commit', name: 'commit', component: CommitView }],
  })
  await router.push({ name: 'commit', query: { image: OVERLAY } })
  const wrapper = mount(CommitView, {
    global: { plugins: [createPinia(), router] },
    attachTo: document.body,
  })
  await settle()
  return wrapper
}

function button(wrapper: Awaited<ReturnType<typeof open>>, text: string) {
  const found = wrapper.findAll('button').find((candidate) => candidate.text() === text)
  if (!found) throw new Error(`no button "${text}" in: ${wrapper.text()}`)
  return found
}

const region = (wrapper: Awaited<ReturnType<typeof open>>): string =>
  wrapper.get('[role="region"]').attributes('aria-label') ?? ''

describe('CommitView', () => {
  it('asks for the confirmation and a journal path, then commits and offers the rollback', async () => {
    const wrapper = await open()
    expect(region(wrapper)).toBe('What will be written')
    expect(wrapper.text()).toContain('128 KiB of a 16 MiB disk')
    await button(wrapper, 'Next').trigger('click')

    expect(region(wrapper)).toBe('Other images that read through this base')
    expect(wrapper.text()).toContain('1 other image reads through this base')
    expect(button(wrapper, 'Next').attributes('disabled')).toBeDefined()
    await wrapper.get('[role="checkbox"]').trigger('click')
    expect(button(wrapper, 'Next').attributes('disabled')).toBeUndefined()
    await button(wrapper, 'Next').trigger('click')

    expect(region(wrapper)).toBe('Options')
    const undo = wrapper.get('input[aria-label="Undo journal file"]')
    const proposed = (undo.element as HTMLInputElement).value
    expect(proposed).toMatch(/^\/vm\/mine\.add-cow\.\d{8}-\d{6}\.undo$/)
    await undo.setValue('relative.undo')
    expect(wrapper.get('[role="alert"]').text()).toContain('needs an absolute path')
    expect(button(wrapper, 'Next').attributes('disabled')).toBeDefined()
    await undo.setValue(proposed)
    await button(wrapper, 'Next').trigger('click')

    expect(region(wrapper)).toBe('Ready to commit')
    expect(wrapper.text()).toContain(
      'Copy 2 clusters (128 KiB) from mine.add-cow into base.raw, changing what 1 other image see.',
    )
    await button(wrapper, 'Commit into the base').trigger('click')
    await settle()
    const commit = main.jobs[0]!
    expect(commit.request).toEqual({
      overlay: OVERLAY,
      keep: false,
      force: true,
      ignoreUnchecked: false,
      acceptBase: false,
      undo: proposed,
    })
    main.finish(commit, {
      overlay: OVERLAY,
      base: '/vm/base.raw',
      baseFormat: 'raw',
      clusters: 2,
      bytes: 131072,
      emptied: true,
      emptiedBy: 'punched',
      dependents: [THEIRS],
      unchecked: [],
      undo: proposed,
      resumed: false,
      grewBase: null,
      lockKind: 'exclusive',
    })
    await settle()
    const result = wrapper.get('[role="status"][aria-label="Commit result"]')
    expect(result.text()).toContain('Copied 2 clusters (128 KiB) into')
    expect(result.text()).toContain('1 other image now sees the committed data.')
    expect(region(wrapper)).toBe('Ready to commit')

    await button(wrapper, 'Roll back this commit').trigger('click')
    const panel = wrapper.get('[role="region"][aria-label="Roll back a commit"]')
    const confirm = panel.get('[role="group"][aria-label="Confirm the rollback"]')
    expect(confirm.text()).toContain('rewrites the base')
    await confirm
      .findAll('button')
      .find((b) => b.text() === 'Roll back')!
      .trigger('click')
    await settle()
    expect(main.jobs[1]!.request).toEqual({ journal: proposed, force: false })
    main.finish(main.jobs[1]!, {
      base: '/vm/base.raw',
      overlay: OVERLAY,
      restoredBytes: 131072,
      overlayClusters: 2,
      alreadyDone: false,
      dependents: [],
      unchecked: [],
    })
    await settle()
    expect(wrapper.get('[role="status"][aria-label="Rollback result"]').text()).toContain(
      'Gave 2 clusters back to the overlay',
    )
    // Rolled back: the result no longer offers it.
    expect(wrapper.findAll('button').some((b) => b.text() === 'Roll back this commit')).toBe(false)
  })

  it('goes back to the other images when one joined the base meanwhile, and asks again', async () => {
    const wrapper = await open()
    await button(wrapper, 'Next').trigger('click')
    await wrapper.get('[role="checkbox"]').trigger('click')
    await button(wrapper, 'Next').trigger('click')
    await button(wrapper, 'Next').trigger('click')
    await button(wrapper, 'Commit into the base').trigger('click')
    await settle()
    const asked = main.calls.filter((call) => call.key === 'imageGetBlastRadius').length
    dependents = [THEIRS, { ...THEIRS, path: '/vm/new.add-cow' }]
    main.fail(main.jobs[0]!, {
      code: 'CONFIRMATION_REQUIRED',
      message: 'Another image uses the base now',
    })
    await settle()
    expect(main.calls.filter((call) => call.key === 'imageGetBlastRadius').length).toBe(asked + 1)
    expect(region(wrapper)).toBe('Other images that read through this base')
    expect(wrapper.text()).toContain('2 other images read through this base')
    expect(button(wrapper, 'Next').attributes('disabled')).toBeDefined()
  })

  it('needs no confirmation, and does not force, when no other image uses the base', async () => {
    dependents = []
    const wrapper = await open()
    await button(wrapper, 'Next').trigger('click')
    expect(wrapper.text()).toContain('No other image reads through this base')
    await button(wrapper, 'Next').trigger('click')
    await button(wrapper, 'Next').trigger('click')
    expect(button(wrapper, 'Commit into the base').attributes('disabled')).toBeUndefined()
    await button(wrapper, 'Commit into the base').trigger('click')
    await settle()
    expect(main.jobs[0]!.request).toMatchObject({ force: false })
  })
})
