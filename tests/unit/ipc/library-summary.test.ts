import { mkdir, rename, rm, utimes } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Library } from '../../../main/engine/library'
import { createOverlay } from '../../../main/engine/ops/create'
import { recordBaseFingerprint } from '../../../main/engine/ops/drift'
import { openImage } from '../../../main/engine/open'
import { LibrarySummaries } from '../../../main/ipc/library-summary'
import type { Logger } from '../../../main/ipc/logger'
import { makeSparseRaw, writeGuest } from '../../helpers/images'
import { tempDir } from '../../helpers/tools'

// The library's summaries kept in main (issue 15 item 1): a list reads again only the images
// whose files changed; every other summary comes from what was kept, and says the same.

const MIB = 1024 * 1024
const CLUSTER = 64 * 1024
const silent: Logger = { warn: () => undefined, error: () => undefined }

let dir: string
let cleanup: () => Promise<void>
let library: Library
const overlays: string[] = []

/**
 * Give a file a modification time of its own, even on a file system with coarse times: in the
 * past, so that the summary read after it may be kept (quietMs 0).
 */
async function touchEarlier(path: string, seconds: number): Promise<void> {
  const earlier = new Date(Date.now() - seconds * 1000)
  await utimes(path, earlier, earlier)
}

/** Summaries that count the images whose chain they read. */
function countingSummaries(): { summaries: LibrarySummaries; reads: string[] } {
  const reads: string[] = []
  return {
    summaries: new LibrarySummaries({ quietMs: 0, onRead: (path) => reads.push(path) }),
    reads,
  }
}

beforeAll(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-summaries-'))
  library = new Library(join(dir, 'data', 'library.json'))
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
})

afterAll(async () => {
  await cleanup()
})

describe('LibrarySummaries', () => {
  it('reads each image once, then only the one whose file changed', async () => {
    const { summaries, reads } = countingSummaries()
    const first = await summaries.list(library, silent)
    expect(reads).toHaveLength(4)
    expect(first.images.find((image) => image.path === join(dir, 'base.raw'))?.dependents).toEqual(
      overlays,
    )

    reads.length = 0
    const again = await summaries.list(library, silent)
    expect(reads).toEqual([])
    expect(again.images).toEqual(first.images)

    await writeGuest(overlays[1]!, [[2 * MIB, Buffer.alloc(CLUSTER, 7)]])
    await touchEarlier(overlays[1]!, 50)
    const changed = await summaries.list(library, silent)
    expect(reads).toEqual([overlays[1]])
    const written = changed.images.find((image) => image.path === overlays[1])
    expect(written?.allocatedPercent).toBeGreaterThan(0)
    // The other summaries are the kept ones, dependents filled in again.
    expect(
      changed.images.find((image) => image.path === join(dir, 'base.raw'))?.dependents,
    ).toEqual(overlays)
  })

  it('reads the overlays again when their base changes, or when its fingerprint is recorded', async () => {
    const { summaries, reads } = countingSummaries()
    await summaries.list(library, silent)
    reads.length = 0
    const base = join(dir, 'base.raw')
    await touchEarlier(base, 100)
    await summaries.list(library, silent)
    expect(new Set(reads)).toEqual(new Set([base, ...overlays]))

    reads.length = 0
    const disk = await openImage(overlays[0]!, { readOnly: true, policy: await library.policy() })
    try {
      await recordBaseFingerprint(disk, library)
    } finally {
      await disk.close()
    }
    const listed = await summaries.list(library, silent)
    expect(reads).toEqual([overlays[0]])
    expect(listed.images.find((image) => image.path === overlays[0])?.base.status).toBe('ok')
  })

  it('sees a missing base come back, and a file replaced under the same name', async () => {
    const { summaries, reads } = countingSummaries()
    const base = join(dir, 'base.raw')
    await rename(base, `${base}.away`)
    try {
      const gone = await summaries.list(library, silent)
      expect(gone.images.find((image) => image.path === overlays[2])?.base.status).toBe('missing')
      reads.length = 0
      await summaries.list(library, silent)
      // The overlays' summaries (base missing) are kept; an image that cannot be read at all
      // (the base itself, gone) is read every time.
      expect(reads).toEqual([base])
    } finally {
      await rename(`${base}.away`, base)
    }
    const back = await summaries.list(library, silent)
    expect(reads).toContain(overlays[2])
    expect(back.images.find((image) => image.path === overlays[2])?.base.status).not.toBe('missing')
  })

  it('reads everything again when the trusted names change, and forgets removed images', async () => {
    const { summaries, reads } = countingSummaries()
    await summaries.list(library, silent)
    reads.length = 0
    await library.trust([{ from: join(dir, 'x'), to: join(dir, 'y') }], 'approved')
    await summaries.list(library, silent)
    expect(reads).toHaveLength(4)

    reads.length = 0
    const extra = join(dir, 'extra.add-cow')
    await createOverlay({ overlay: extra, backing: 'base.raw', backingFormat: 'raw' })
    await library.addImages([extra])
    await summaries.list(library, silent)
    expect(reads).toEqual([extra])
    await library.removeImages([extra])
    await rm(extra)
    const listed = await summaries.list(library, silent)
    expect(listed.images.map((image) => image.path)).not.toContain(extra)
  })

  it('does not keep a summary read just after one of its files changed', async () => {
    const reads: string[] = []
    const summaries = new LibrarySummaries({ quietMs: 60_000, onRead: (path) => reads.push(path) })
    await touchEarlier(overlays[0]!, 0)
    await summaries.list(library, silent)
    reads.length = 0
    await summaries.list(library, silent)
    expect(reads).toContain(overlays[0])
  })
})

describe('LibrarySummaries of a large library read for the first time', () => {
  it('answers with the unread images pending, reads each once, and says when all are read', async () => {
    const folder = join(dir, 'large')
    await mkdir(folder)
    const large = new Library(join(dir, 'large-data', 'library.json'))
    const paths: string[] = []
    for (let index = 0; index < 60; index++) {
      const result = await createOverlay({
        overlay: join(folder, `vm-${index}.add-cow`),
        backing: '../base.raw',
        backingFormat: 'raw',
        policy: await library.policy({ allowAny: true }),
      })
      paths.push(result.overlay)
    }
    await large.addImages(paths)
    const reads: string[] = []
    const summaries = new LibrarySummaries({ quietMs: 0, onRead: (path) => reads.push(path) })
    let settle!: (paths: string[]) => void
    const settled = new Promise<string[]>((resolve) => (settle = resolve))

    const first = await summaries.list(large, silent, { waitMs: 0, onSettled: settle })
    const pending = first.images.filter((image) => image.pending).map((image) => image.path)
    expect(pending.length).toBeGreaterThan(0)
    expect(first.images.map((image) => image.path)).toEqual(paths)
    for (const image of first.images.filter((entry) => entry.pending)) {
      expect(image).toMatchObject({ format: null, virtualSize: null, error: null })
    }
    // A second list while the first one's reads go on reads nothing twice.
    const meanwhile = summaries.list(large, silent)
    expect(await settled).toEqual(pending)
    const complete = await meanwhile
    expect(complete.images.some((image) => image.pending)).toBe(false)
    expect(complete.images.every((image) => image.format === 'add-cow')).toBe(true)
    expect(reads.length).toBe(60)
    expect(new Set(reads).size).toBe(60)

    // Under 50 images to read, a list waits for them all.
    reads.length = 0
    await touchEarlier(paths[0]!, 30)
    const small = await summaries.list(large, silent, { waitMs: 0, onSettled: settle })
    expect(reads).toEqual([paths[0]])
    expect(small.images.some((image) => image.pending)).toBe(false)
  })
})
