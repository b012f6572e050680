import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { isEngineError } from '../../../../main/engine/errors'

import { checkExitCode, checkImage } from '../../../../main/engine/ops/check'

import { streamOverlay } from '../../../../main/engine/ops/stream'
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
