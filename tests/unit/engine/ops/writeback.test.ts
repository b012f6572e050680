import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { isEngineError } from '../../../../main/engine/errors'
import { BlockFile, setFileObserver, type FileEvent } from '../../../../main/engine/file'
import { streamOverlay } from '../../../../main/engine/ops/stream'
import { EarlyWriteback } from '../../../../main/engine/ops/writeback'
import {
  allocation,
  guestView,
  makeOverlay,
  makeSparseRaw,
  pattern,
  perTestFolder,
  writeGuest,
} from '../../../helpers/images'

// Early writeback: a long copy starts an fdatasync every so many bytes and goes on; the sync the
// copy relies on runs only once those have settled, and an early sync's failure is not lost
// (Linux reports a writeback error to one fsync per open file).

const MiB = 1024 * 1024
const folder = perTestFolder('addcow-writeback-')
afterEach(() => {
  setFileObserver(null)
})

/** Record the syncs of `path`, in order: 'early' for an fdatasync, 'full' for an fsync. */
function watchSyncs(path: string): { seen: string[] } {
  const seen: string[] = []
  setFileObserver({
    before(event: FileEvent) {
      if (event.kind === 'sync' && event.path === path) seen.push(event.metadata ? 'full' : 'early')
    },
  })
  return { seen }
}

describe('EarlyWriteback', () => {
  it('starts an fdatasync once `every` bytes were written, one at a time', async () => {
    const path = join(folder.dir, 'file.raw')
    await writeFile(path, Buffer.alloc(4 * MiB, 1))
    const { seen } = watchSyncs(path)
    const writeback = await EarlyWriteback.open(path, 2 * MiB)
    try {
      writeback.wrote(MiB)
      expect(seen).toEqual([])
      writeback.wrote(MiB)
      expect(seen).toEqual(['early'])
      // One in flight: more bytes do not start a second one until it ends.
      writeback.wrote(4 * MiB)
      expect(seen).toEqual(['early'])
      await writeback.settle()
      writeback.wrote(2 * MiB)
      expect(seen).toEqual(['early', 'early'])
    } finally {
      await writeback.close()
    }
  })

  it('runs the sync the caller relies on after the early one, with none starting meanwhile', async () => {
    const path = join(folder.dir, 'file.raw')
    await writeFile(path, Buffer.alloc(MiB, 1))
    const file = await BlockFile.open(path, true)
    try {
      const { seen } = watchSyncs(path)
      const writeback = await EarlyWriteback.open(path, MiB)
      writeback.wrote(MiB)
      const durable = writeback.durably(async () => {
        // The early sync has settled before this runs; bytes written now start none.
        expect(seen).toEqual(['early'])
        writeback.wrote(8 * MiB)
        await file.sync()
        writeback.wrote(8 * MiB)
        return 'synced'
      })
      expect(await durable).toBe('synced')
      expect(seen).toEqual(['early', 'full'])
      // Released: the next bytes start an early sync again.
      writeback.wrote(MiB)
      expect(seen).toEqual(['early', 'full', 'early'])
      await writeback.close()
    } finally {
      await file.close()
    }
  })

  it('keeps an early sync that failed and throws it from settle and durably', async () => {
    const path = join(folder.dir, 'file.raw')
    await writeFile(path, Buffer.alloc(MiB, 1))
    setFileObserver({
      before(event: FileEvent) {
        if (event.kind === 'sync' && !event.metadata) throw new Error('EIO: writeback failed')
      },
    })
    const writeback = await EarlyWriteback.open(path, MiB)
    writeback.wrote(MiB)
    await expect(writeback.settle()).rejects.toThrow(/sync/)
    let ran = false
    const failure = await writeback
      .durably(async () => {
        ran = true
      })
      .catch((error: unknown) => error)
    expect(isEngineError(failure)).toBe(true)
    // The caller's sync did not run: what it would record is not known to be on disk.
    expect(ran).toBe(false)
    setFileObserver(null)
    await writeback.close()
  })
})

describe('stream with early writeback', () => {
  it('syncs the image file while it copies, then sets the bits; the guest view is unchanged', async () => {
    // 96 MiB of base data below an overlay with 1 MiB written: 95 MiB to copy, so early syncs
    // start (every 32 MiB) before the flush that records the bits.
    await makeSparseRaw(join(folder.dir, 'base.raw'), 96 * MiB, [[0, pattern(96 * MiB, 3)]])
    const overlay = await makeOverlay(folder.library, {
      overlay: join(folder.dir, 'ov.add-cow'),
      backing: 'base.raw',
      backingFormat: 'raw',
    })
    await writeGuest(overlay, [[5 * MiB, pattern(MiB, 9)]])
    const view = await guestView(overlay)
    const { seen } = watchSyncs(join(folder.dir, 'ov.raw'))
    const result = await streamOverlay({ overlay, library: folder.library })
    setFileObserver(null)
    expect(result.copiedBytes).toBe(95 * MiB)
    // At least one early sync besides the two the end of a stream makes (the bits' flush, and
    // the one before ALL_ALLOCATED): 95 MiB is less than a flush interval.
    expect(seen.filter((kind) => kind === 'early').length).toBeGreaterThanOrEqual(3)
    expect((await readFile(join(folder.dir, 'ov.raw'))).equals(view)).toBe(true)
    expect((await allocation(overlay)).allAllocated).toBe(true)
  })
})
