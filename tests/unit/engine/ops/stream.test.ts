import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { isEngineError } from '../../../../main/engine/errors'

import { checkExitCode, checkImage } from '../../../../main/engine/ops/check'

import { streamOverlay } from '../../../../main/engine/ops/stream'
import { mapImage } from '../../../../main/engine/ops/map'
import { openImage } from '../../../../main/engine/open'
import { canListDataExtents } from '../../../../main/engine/formats/common/sparse'
import {
  allocation,
  guestView,
  makeOverlay,
  makeSparseRaw,
  pattern,
  patternedOverlayScene,
  perTestFolder,
  writeGuest,
} from '../../../helpers/images'

const MiB = 1024 * 1024
const folder = perTestFolder('addcow-stream-')

const scene = (): Promise<string> => patternedOverlayScene(folder.dir, folder.library)

describe('stream', () => {
  it('makes the image file a complete raw disk and sets ALL_ALLOCATED', async () => {
    const overlay = await scene()
    // Stale bytes in an unallocated cluster where the base reads zeros must not show through.
    const { open } = await import('node:fs/promises')
    const handle = await open(join(folder.dir, 'ov.raw'), 'r+')
    await handle.write(Buffer.alloc(1000, 0x77), 0, 1000, 3 * MiB + 10)
    await handle.close()
    const view = await guestView(overlay)
    const progress: number[] = []
    const result = await streamOverlay({
      overlay,
      library: folder.library,
      onProgress: (done) => progress.push(done),
    })
    expect(result.copiedBytes).toBeGreaterThan(0)
    expect(result.zeroBytes).toBeGreaterThan(0)
    expect(progress.length).toBeGreaterThan(0)
    expect((await readFile(join(folder.dir, 'ov.raw'))).equals(view)).toBe(true)
    expect((await allocation(overlay)).allAllocated).toBe(true)
    expect(checkExitCode(await checkImage(overlay, { library: folder.library }))).toBe(0)
    expect((await streamOverlay({ overlay, library: folder.library })).alreadyDone).toBe(true)
  })

  it('maps a streamed overlay as qemu-img maps its image file: the base holes it kept are zeros', async () => {
    // A sparse base: 1 MiB of data at 2 MiB, the rest holes; the overlay writes 64 KiB at 6 MiB.
    await makeSparseRaw(join(folder.dir, 'sparse-base.raw'), 8 * MiB, [[2 * MiB, pattern(MiB, 4)]])
    const overlay = await makeOverlay(folder.library, {
      overlay: join(folder.dir, 'holey.add-cow'),
      backing: 'sparse-base.raw',
      backingFormat: 'raw',
    })
    await writeGuest(overlay, [[6 * MiB, pattern(64 * 1024, 5)]])
    const result = await streamOverlay({ overlay, library: folder.library })
    expect(result.zeroBytes).toBe(8 * MiB - MiB - 64 * 1024)
    const disk = await openImage(overlay, { readOnly: true })
    try {
      const map = await mapImage(disk)
      if (!canListDataExtents()) return
      // It used to be one data extent of 8 MiB (ALL_ALLOCATED was taken as "all data").
      expect(map.map(({ start, length, data }) => [start, length, data])).toEqual([
        [0, 2 * MiB, false],
        [2 * MiB, MiB, true],
        [3 * MiB, 3 * MiB, false],
        [6 * MiB, 64 * 1024, true],
        [6 * MiB + 64 * 1024, 2 * MiB - 64 * 1024, false],
      ])
    } finally {
      await disk.close()
    }
  })

  it('streams through a chain of two add-cow layers', async () => {
    await makeSparseRaw(join(folder.dir, 'root.raw'), 2 * MiB, [[0, pattern(2 * MiB, 5)]])
    const mid = await makeOverlay(folder.library, {
      overlay: join(folder.dir, 'mid.add-cow'),
      backing: 'root.raw',
      backingFormat: 'raw',
      clusterSize: 4096,
    })
    await writeGuest(mid, [[123_456, pattern(9999, 6)]])
    const top = await makeOverlay(folder.library, {
      overlay: join(folder.dir, 'top.add-cow'),
      backing: 'mid.add-cow',
      backingFormat: 'add-cow',
    })
    await writeGuest(top, [[MiB, pattern(5, 7)]])
    const view = await guestView(top)
    await streamOverlay({ overlay: top, library: folder.library })
    expect((await readFile(join(folder.dir, 'top.raw'))).equals(view)).toBe(true)
  })

  it('stops on an abort with the overlay valid, and resumes where it stopped', async () => {
    const overlay = await scene()
    const view = await guestView(overlay)
    const controller = new AbortController()
    controller.abort()
    const error = await streamOverlay({
      overlay,
      library: folder.library,
      signal: controller.signal,
    }).catch((caught: unknown) => caught)
    expect(isEngineError(error, 'ABORTED')).toBe(true)
    expect((await guestView(overlay)).equals(view)).toBe(true)
    await streamOverlay({ overlay, library: folder.library })
    expect((await readFile(join(folder.dir, 'ov.raw'))).equals(view)).toBe(true)
  })

  it('refuses a changed base unless accepted', async () => {
    const overlay = await scene()
    const { appendFile } = await import('node:fs/promises')
    await appendFile(join(folder.dir, 'base.raw'), Buffer.alloc(512, 1))
    const error = await streamOverlay({ overlay, library: folder.library }).catch(
      (caught: unknown) => caught,
    )
    expect(isEngineError(error, 'BASE_CHANGED')).toBe(true)
    await streamOverlay({ overlay, library: folder.library, acceptBase: true })
  })
})
