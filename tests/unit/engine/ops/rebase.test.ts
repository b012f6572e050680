import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { isEngineError } from '../../../../main/engine/errors'
import { encodeHeader } from '../../../../main/engine/formats/add-cow/header'
import { checkExitCode, checkImage } from '../../../../main/engine/ops/check'
import { rebaseOverlay } from '../../../../main/engine/ops/rebase'
import { streamOverlay } from '../../../../main/engine/ops/stream'
import { addCowDriver } from '../../../../main/engine/formats/add-cow/add-cow-disk'
import { readHeaderFile as readAddCowHeader } from '../../../../main/engine/formats/add-cow/edit'

import {
  guestView,
  makeOverlay,
  makeSparseRaw,
  pattern,
  patternedOverlayScene,
  perTestFolder,
} from '../../../helpers/images'

const MiB = 1024 * 1024
const folder = perTestFolder('addcow-rebase-')

const scene = (): Promise<string> => patternedOverlayScene(folder.dir, folder.library)

describe('rebase', () => {
  it('safe mode keeps the guest view and copies only the clusters that differ', async () => {
    const overlay = await scene()
    await makeSparseRaw(join(folder.dir, 'new.raw'), 3 * MiB, [
      [0, pattern(MiB, 1)],
      [65536 * 2, pattern(10, 9)],
    ])
    const view = await guestView(overlay)
    const result = await rebaseOverlay({ overlay, backing: 'new.raw', library: folder.library })
    expect(result.newBackingFormat).toBe('raw')
    // Cluster 2 differs (10 bytes), and the old base's data at 2 MiB + 5 .. (5 clusters).
    expect(result.copiedClusters).toBe(1 + Math.ceil((2 * MiB + 5 + 300_000) / 65536) - 32)
    expect((await guestView(overlay)).equals(view)).toBe(true)
    const header = await readAddCowHeader(overlay)
    expect(header.backingName).toBe('new.raw')
    // Byte-exact: the header is exactly what a fresh encoder writes for these names.
    expect((await readFile(overlay)).subarray(0, 65536).equals(encodeHeader(header, overlay))).toBe(
      true,
    )
    expect(checkExitCode(await checkImage(overlay, { library: folder.library }))).toBe(0)
  })

  it('unsafe mode rewrites the name only, and the header stays byte-exact', async () => {
    const overlay = await scene()
    await makeSparseRaw(join(folder.dir, 'moved.raw'), 3 * MiB)
    const before = await readFile(overlay)
    const result = await rebaseOverlay({
      overlay,
      backing: 'moved.raw',
      backingFormat: 'raw',
      unsafe: true,
      library: folder.library,
    })
    expect(result.copiedClusters).toBe(0)
    const after = await readFile(overlay)
    expect(after.length).toBe(before.length)
    expect(after.subarray(65536).equals(before.subarray(65536))).toBe(true)
    const header = await readAddCowHeader(overlay)
    expect(after.subarray(0, 65536).equals(encodeHeader(header, overlay))).toBe(true)
    expect(after.subarray(76, 76 + 9).toString()).toBe('moved.raw')
    expect(after.subarray(85, 85 + 6).toString()).toBe('ov.raw')
  })

  it("detaches with '' after copying every cluster that is not zero", async () => {
    const overlay = await scene()
    const view = await guestView(overlay)
    await rebaseOverlay({ overlay, backing: '', library: folder.library })
    const header = await readAddCowHeader(overlay)
    expect(header.backingName).toBeNull()
    expect((await guestView(overlay)).equals(view)).toBe(true)
  })

  it('refuses a new base that is the overlay or its image file', async () => {
    const overlay = await scene()
    const error = await rebaseOverlay({
      overlay,
      backing: 'ov.raw',
      backingFormat: 'raw',
      library: folder.library,
    }).catch((caught: unknown) => caught)
    expect(isEngineError(error, 'SAME_FILE')).toBe(true)
  })

  describe.each([
    ['safe', false],
    ['unsafe (-u)', true],
  ])('%s mode refuses a new base whose chain contains the overlay', (_mode, unsafe) => {
    it('through a flattened child (x → y → x), naming the cycle, and leaves x as it was', async () => {
      const x = await scene()
      const y = await makeOverlay(folder.library, {
        overlay: join(folder.dir, 'y.add-cow'),
        backing: 'ov.add-cow',
        backingFormat: 'add-cow',
      })
      await streamOverlay({ overlay: y, library: folder.library })
      const before = await readFile(x)
      const error = await rebaseOverlay({
        overlay: x,
        backing: 'y.add-cow',
        backingFormat: 'add-cow',
        unsafe,
        library: folder.library,
      }).catch((caught: unknown) => caught)
      expect(isEngineError(error, 'CHAIN_LOOP')).toBe(true)
      expect((error as Error).message).toContain(`${x} → ${y} → ${x}`)
      expect((await readFile(x)).equals(before)).toBe(true)
    })

    it('deeper down (x → z → y → x), and a new base whose own chain loops', async () => {
      const x = await scene()
      const y = await makeOverlay(folder.library, {
        overlay: join(folder.dir, 'y.add-cow'),
        backing: 'ov.add-cow',
        backingFormat: 'add-cow',
      })
      const z = await makeOverlay(folder.library, {
        overlay: join(folder.dir, 'z.add-cow'),
        backing: 'y.add-cow',
        backingFormat: 'add-cow',
      })
      const error = await rebaseOverlay({
        overlay: x,
        backing: 'z.add-cow',
        backingFormat: 'add-cow',
        unsafe,
        library: folder.library,
      }).catch((caught: unknown) => caught)
      expect(isEngineError(error, 'CHAIN_LOOP')).toBe(true)
      expect((error as Error).message).toContain(`${x} → ${z} → ${y} → ${x}`)

      // p ↔ q already loop (by a name rewrite): neither may become x's base.
      await makeSparseRaw(join(folder.dir, 'pbase.raw'), 3 * MiB, [])
      const p = await makeOverlay(folder.library, {
        overlay: join(folder.dir, 'p.add-cow'),
        backing: 'pbase.raw',
        backingFormat: 'raw',
      })
      const q = await makeOverlay(folder.library, {
        overlay: join(folder.dir, 'q.add-cow'),
        backing: 'p.add-cow',
        backingFormat: 'add-cow',
      })
      await streamOverlay({ overlay: q, library: folder.library })
      await addCowDriver.setBacking!(p, { name: 'q.add-cow', format: 'add-cow' })
      const looped = await rebaseOverlay({
        overlay: x,
        backing: 'q.add-cow',
        backingFormat: 'add-cow',
        unsafe,
        library: folder.library,
      }).catch((caught: unknown) => caught)
      expect(isEngineError(looped, 'CHAIN_LOOP')).toBe(true)
      expect((looped as Error).message).toContain('loops')
      expect((looped as Error).message).toContain(q)
    })
  })
})
