// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { NDialogProvider, NMessageProvider } from 'naive-ui'
import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { defineComponent, h } from 'vue'
import FileBrowserDialog from '../../../../renderer/src/components/FileBrowserDialog.vue'
import { useFileBrowserStore } from '../../../../renderer/src/stores/file-browser'
import { stubMatchMedia } from '../helpers/dom'
import { installFakeMain, settle, type FakeMain } from '../helpers/fake-main'

// The file browser shows the folder asked last: a listing that comes back after the user typed
// another folder is stale and must not replace it (a clean-clone e2e run under load showed the
// first folder's late answer undoing the typed one).

let main: FakeMain
/** Answers to fs:list-folder the test releases, by folder. */
const pending = new Map<string, () => void>()

function listing(path: string, names: string[]): unknown {
  return {
    path,
    parent: '/',
    entries: names.map((name) => ({
      name,
      path: `${path}/${name}`,
      kind: 'file',
      link: false,
      size: 512,
      modifiedAt: null,
    })),
    truncated: false,
  }
}

beforeAll(() => {
  stubMatchMedia()
  main = installFakeMain()
  main.handle('fsListFolder', (request) => {
    const { path } = request as { path: string }
    return new Promise((resolve) =>
      pending.set(path, () => resolve(listing(path, [`in-${path.split('/').pop()}.raw`]))),
    )
  })
})

afterEach(() => {
  document.body.innerHTML = ''
  pending.clear()
})

function optionNames(): string[] {
  return [...document.querySelectorAll('[role="option"]')].map((node) => node.textContent ?? '')
}

describe('FileBrowserDialog', () => {
  it('keeps the typed folder when the first listing answers after it', async () => {
    setActivePinia(createPinia())
    const Shell = defineComponent(
      () => () =>
        h(NMessageProvider, null, () => h(NDialogProvider, null, () => h(FileBrowserDialog))),
    )
    const wrapper = mount(Shell, { attachTo: document.body })
    const store = useFileBrowserStore()
    void store.ask({ mode: 'open', title: 'Pick', multiple: false, folder: '/first' })
    await settle()
    expect([...pending.keys()]).toEqual(['/first'])

    const input = document.querySelector<HTMLInputElement>('input[aria-label="Folder path"]')!
    input.value = '/typed'
    input.dispatchEvent(new Event('input'))
    input.dispatchEvent(new KeyboardEvent('keyup', { key: 'Enter', bubbles: true }))
    await settle()
    expect([...pending.keys()]).toEqual(['/first', '/typed'])

    pending.get('/typed')!()
    await settle()
    expect(optionNames().join(' ')).toContain('in-typed.raw')
    // The first folder's answer comes last: it changes nothing.
    pending.get('/first')!()
    await settle()
    expect(optionNames().join(' ')).toContain('in-typed.raw')
    expect(optionNames().join(' ')).not.toContain('in-first.raw')
    expect(input.value).toBe('/typed')
    wrapper.unmount()
  })
})
