import { utimes } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Library, type LibraryData } from '../../../main/engine/library'
import { createOverlay } from '../../../main/engine/ops/create'
import { ListingVersions } from '../../../main/ipc/library-listing'
import { LibrarySummaries } from '../../../main/ipc/library-summary'
import type { Logger } from '../../../main/ipc/logger'
import { makeSparseRaw, writeGuest } from '../../helpers/images'
import { tempDir } from '../../helpers/tools'

// The incremental Refresh of the library (issue 15, target 1): main names each listing, a list
// that names the one it holds gets only the rows whose file changed (the renderer's side, which
// puts them in place, is tests/unit/renderer/stores/library.test.ts); an unchanged image is not
// read again, and each list reads the library file once.

const MIB = 1024 * 1024
const CLUSTER = 64 * 1024
const silent: Logger = { warn: () => undefined, error: () => undefined }

/** A library that counts how often its file is read. */
class CountingLibrary extends Library {
  loads = 0
  override async load(): Promise<LibraryData> {
    this.loads++
    return super.load()
  }
}

let dir: string
let cleanup: () => Promise<void>
let library: CountingLibrary
const overlays: string[] = []

/** Set a file's times in the past, so that a summary read after it is kept (quietMs 0). */
async function touchEarlier(path: string, seconds: number): Promise<void> {
  const earlier = new Date(Date.now() - seconds * 1000)
  await utimes(path, earlier, earlier)
}

beforeAll(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-listing-'))
  library = new CountingLibrary(join(dir, 'data', 'library.json'))
  await makeSparseRaw(join(dir, 'base.raw'), 16 * MIB, [[0, Buffer.alloc(MIB, 1)]])
  for (const name of ['a', 'b', 'c']) {
    const result = await createOverlay({
      overlay: join(dir, `${name}.add-cow`),
      backing: 'base.raw',
      backingFormat: 'raw',
    })
    await library.trust(result.trust, 'created')
    overlays.push(result.overlay)
  }
  await library.addImages([join(dir, 'base.raw'), ...overlays])
  for (const path of [join(dir, 'base.raw'), ...overlays]) await touchEarlier(path, 60)
})

afterAll(async () => {
  await cleanup()
})

describe('the incremental library listing', () => {
  it('sends only the row whose file changed, and reads only that image', async () => {
    const reads: string[] = []
    const summaries = new LibrarySummaries({ quietMs: 0, onRead: (path) => reads.push(path) })
    const versions = new ListingVersions()
    const list = async (since?: string) => {
      const { images, warning } = await summaries.list(library, silent)
      return versions.answer(images, warning, since)
    }

    library.loads = 0
    const first = await list()
    expect(library.loads).toBe(1)
    expect(first.since).toBeNull()
    expect(first.images.map((image) => image.path)).toEqual([join(dir, 'base.raw'), ...overlays])

    // Nothing changed: no image read, no row sent, the same version.
    reads.length = 0
    library.loads = 0
    const unchanged = await list(first.version)
    expect(library.loads).toBe(1)
    expect(reads).toEqual([])
    expect(unchanged).toMatchObject({
      images: [],
      since: first.version,
      version: first.version,
      order: null,
    })

    // One overlay written: it alone is read and sent.
    await writeGuest(overlays[1]!, [[2 * MIB, Buffer.alloc(CLUSTER, 7)]])
    await touchEarlier(overlays[1]!, 30)
    reads.length = 0
    const changed = await list(first.version)
    expect(reads).toEqual([overlays[1]])
    expect(changed.version).not.toBe(first.version)
    expect(changed.order).toBeNull()
    expect(changed.images.map((image) => image.path)).toEqual([overlays[1]])
    expect(changed.images[0]!.allocatedPercent).toBeGreaterThan(0)
    // The held rows with the changed one put in place are what a whole listing says now.
    const patched = first.images.map(
      (image) => changed.images.find((row) => row.path === image.path) ?? image,
    )
    expect(patched).toEqual((await list()).images)

    // An image removed: the order comes with the diff, and the row leaves.
    await library.removeImages([overlays[0]!])
    reads.length = 0
    const removed = await list(changed.version)
    expect(reads).toEqual([])
    expect(removed.order).toEqual([join(dir, 'base.raw'), overlays[1], overlays[2]])
    // The base lost a dependent: its row is sent again.
    expect(removed.images.map((image) => image.path)).toEqual([join(dir, 'base.raw')])
    await library.addImages([overlays[0]!])
  })

  it('sends the whole library for a version it does not know', async () => {
    const summaries = new LibrarySummaries({ quietMs: 0 })
    const versions = new ListingVersions()
    const { images, warning } = await summaries.list(library, silent)
    const answer = versions.answer(images, warning, 'a-version-of-another-run')
    expect(answer.since).toBeNull()
    expect(answer.images).toHaveLength(4)
  })
})
