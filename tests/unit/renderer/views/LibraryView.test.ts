// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { NDialogProvider, NMessageProvider } from 'naive-ui'
import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { defineComponent, h } from 'vue'
import { createMemoryHistory, createRouter } from 'vue-router'
import type { IpcError } from '../../../../shared/ipc/result'
import { useLibraryStore } from '../../../../renderer/src/stores/library'
import LibraryView from '../../../../renderer/src/views/LibraryView.vue'
import { stubMatchMedia } from '../helpers/dom'
import { installFakeMain, settle, type FakeMain } from '../helpers/fake-main'

// The Library over a fake main when the library file is damaged (issue 13 item 6): a warning
// banner above the entries main could read, and, when the list cannot be loaded at all, an
// error banner instead of an empty table saying "No Data".

let main: FakeMain
let listing: () => unknown

beforeAll(() => {
  stubMatchMedia()
  main = installFakeMain()
  // Each answer is the whole library (as main answers a client it has no listing of).
  main.handle('libraryListImages', () => ({
    version: 'v1',
    since: null,
    order: null,
    ...(listing() as object),
  }))
})

afterEach(() => {
  document.body.innerHTML = ''
})

async function open() {
  const pinia = createPinia()
  setActivePinia(pinia)
  const router = createRouter({
    history: createMemoryHistory(),
    routes: [
      { path: '/library', name: 'library', component: LibraryView },
      // Where a row's links lead (not followed here).
      ...['chain', 'allocation', 'check', 'commit', 'flatten', 'rebase', 'launch', 'compare'].map(
        (name) => ({ path: `/${name}`, name, component: LibraryView }),
      ),
    ],
  })
  await router.push('/library')
  const Shell = defineComponent(
    () => () => h(NMessageProvider, null, () => h(NDialogProvider, null, () => h(LibraryView))),
  )
  const wrapper = mount(Shell, { global: { plugins: [pinia, router] }, attachTo: document.body })
  await useLibraryStore()
    .load()
    .catch(() => undefined)
  await settle()
  return wrapper
}

describe('LibraryView on a damaged library file', () => {
  it('shows the warning over the entries that could be read', async () => {
    listing = () => ({
      images: [],
      warning:
        'The library file /d/library.json has 1 entry that cannot be read, left out: images[0].path is a number (7), not a non-empty string.',
    })
    const wrapper = await open()
    const alerts = wrapper.findAll('[role="alert"]')
    expect(alerts.map((alert) => alert.text()).join('\n')).toContain(
      'images[0].path is a number (7)',
    )
  })

  it('shows why the list could not be loaded, not an empty table', async () => {
    listing = () => {
      const error: IpcError = {
        code: 'INTERNAL',
        message: 'Internal error in library:list-images: boom',
      }
      throw error
    }
    const wrapper = await open()
    expect(wrapper.text()).toContain('The library could not be read')
    expect(wrapper.text()).toContain('boom')
    expect(wrapper.text()).not.toContain('No Data')
  })

  it('shows a member of a loop of base names as a Loop with its cycle, not a base state', async () => {
    const member = (name: string, loop: string[] | null) => ({
      path: `/vm/${name}`,
      name,
      addedAt: '2026-12-05T10:00:00.000Z',
      format: 'add-cow',
      virtualSize: 1024,
      diskUsage: 1024,
      files: [],
      clusterSize: 65536,
      allocatedPercent: 0,
      base: { status: 'changed', stored: 'y.add-cow', path: '/vm/y.add-cow', reason: null },
      chainLength: 2,
      dependents: [],
      error: null,
      loop,
    })
    listing = () => ({
      images: [member('x.add-cow', ['/vm/x.add-cow', '/vm/y.add-cow']), member('z.add-cow', null)],
      warning: null,
    })
    const wrapper = await open()
    const rows = wrapper.findAll('tr').filter((row) => row.text().includes('.add-cow'))
    const x = rows.find((row) => row.text().includes('x.add-cow'))!
    const z = rows.find((row) => row.text().includes('z.add-cow'))!
    expect(x.text()).toContain('Loop')
    expect(x.text()).not.toContain('Base changed')
    expect(x.find('[title*="x.add-cow → y.add-cow → x.add-cow"]').exists()).toBe(true)
    expect(z.text()).toContain('Base changed')
    expect(z.text()).not.toContain('Loop')
  })
})
