// @vitest-environment happy-dom
import { createPinia, setActivePinia } from 'pinia'
import { isReactive } from 'vue'
import { beforeAll, beforeEach, describe, expect, it } from 'vitest'
import type { ImageSummary } from '../../../../shared/ipc/contract'
import { useLibraryStore } from '../../../../renderer/src/stores/library'
import { installFakeMain, type FakeMain } from '../helpers/fake-main'
import { summary } from '../helpers/fixtures'

// The library store over a fake main (issue 15, target 1): the first list takes the whole
// library, a Refresh names the listing it holds and applies main's diff to raw rows, keeping
// the row objects (and the array) that did not change; lists asked while one runs are one more.

let main: FakeMain
/** What the fake main answers, given the `since` of the request. */
let answer: (since: string | undefined) => unknown

beforeAll(() => {
  main = installFakeMain()
  main.handle('libraryListImages', (request) => answer((request as { since?: string }).since))
})

beforeEach(() => {
  setActivePinia(createPinia())
  main.calls.length = 0
})

const a = summary('/vm/a.add-cow')
const b = summary('/vm/b.add-cow')

function whole(images: ImageSummary[], version: string) {
  return { images, warning: null, version, since: null, order: null }
}

describe('the library store', () => {
  it('asks for the changes since the listing it holds and keeps the rows that did not change', async () => {
    const library = useLibraryStore()
    answer = () => whole([a, b], 'v1')
    await library.load()
    expect(main.calls.map((call) => call.request)).toEqual([{}])
    const [heldA] = library.images
    expect(isReactive(heldA)).toBe(false)

    const written = { ...b, allocatedPercent: 50 }
    answer = (since) =>
      since === 'v1'
        ? { images: [written], warning: null, version: 'v2', since: 'v1', order: null }
        : whole([a, written], 'v2')
    await library.load()
    expect(main.calls[1]!.request).toEqual({ since: 'v1' })
    expect(library.images.map((image) => image.allocatedPercent)).toEqual([a.allocatedPercent, 50])
    expect(library.images[0]).toBe(heldA)

    // Nothing changed: the same array, so nothing downstream is computed again.
    const before = library.images
    answer = () => ({ images: [], warning: null, version: 'v2', since: 'v2', order: null })
    await library.load()
    expect(main.calls[2]!.request).toEqual({ since: 'v2' })
    expect(library.images).toBe(before)

    // An image removed and one added: the order comes with the diff, the new row in it.
    const c = summary('/vm/c.add-cow')
    answer = () => ({
      images: [c],
      warning: null,
      version: 'v3',
      since: 'v2',
      order: [c.path, b.path],
    })
    await library.load()
    expect(library.images.map((image) => image.path)).toEqual([c.path, b.path])
    expect(library.images[1]).toBe(before[1])
  })

  it('lists once more after the running list, however many loads are asked meanwhile', async () => {
    const library = useLibraryStore()
    answer = () => whole([a], 'v1')
    await Promise.all([library.load(), library.load(), library.load()])
    expect(main.calls).toHaveLength(2)
    expect(main.calls[1]!.request).toEqual({ since: 'v1' })
  })
})
