import { access, copyFile, mkdir, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isEngineError } from '../../../../main/engine/errors'
import type { Library } from '../../../../main/engine/library'
import { baseState } from '../../../../main/engine/ops/base-state'
import { deleteImageFiles } from '../../../../main/engine/ops/delete'
import { imageInfo } from '../../../../main/engine/ops/info'
import { locateBase } from '../../../../main/engine/ops/locate'
import { streamOverlay } from '../../../../main/engine/ops/stream'
import { tempDir } from '../../../helpers/tools'
import {
  guestView,
  libraryIn,
  makeOverlay,
  makeSparseRaw,
  pattern,
  writeGuest,
} from '../../../helpers/images'

// Issue 12 items 5 and 6: the base states every view shows, Delete files refusing while other
// images read through the image, and Locate checking the file it is given.

const MiB = 1024 * 1024
let dir: string
let cleanup: () => Promise<void>
let library: Library

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-links-'))
  library = libraryIn(dir)
})
afterEach(async () => {
  await cleanup()
})

async function scene(): Promise<{ base: string; overlay: string }> {
  const base = join(dir, 'base.raw')
  await makeSparseRaw(base, 4 * MiB, [[0, pattern(4 * MiB, 1)]])
  const overlay = await makeOverlay(library, {
    overlay: join(dir, 'ov.add-cow'),
    backing: 'base.raw',
    backingFormat: 'raw',
  })
  await writeGuest(overlay, [[MiB, pattern(64 * 1024, 2)]])
  return { base, overlay }
}

const stateOf = async (path: string, deep = true): Promise<string> =>
  (await baseState(path, { library, policy: await library.policy(), deep })).status

describe('base states', () => {
  it('tells matches, changed, not recorded, missing, not read and none apart', async () => {
    const { base, overlay } = await scene()
    expect(await stateOf(overlay)).toBe('ok')
    expect(await stateOf(base)).toBe('none')

    // Not recorded: the same files, another library (as on another machine).
    const elsewhere = libraryIn(join(dir, 'other'))
    const unverified = await baseState(overlay, { library: elsewhere, deep: true })
    expect(unverified.status).toBe('unverified')
    expect(unverified.path).toBe(base)

    // Changed: one byte of the base, same length; the cheap test sees the mtime.
    const bytes = Buffer.alloc(1, 0xee)
    await writeFile(base, bytes, { flag: 'r+' })
    expect(await stateOf(overlay, false)).toBe('changed')
    const changed = await baseState(overlay, { library, deep: true })
    expect(changed.changes.length).toBeGreaterThan(0)

    // Missing.
    await rename(base, join(dir, 'moved.raw'))
    expect(await stateOf(overlay)).toBe('missing')
  })

  it('a flattened overlay does not read its base', async () => {
    const { overlay } = await scene()
    await streamOverlay({ overlay, library })
    expect(await stateOf(overlay)).toBe('not-read')
  })
})

describe('delete files', () => {
  it('refuses while another image reads through it, naming it; deletes both files otherwise', async () => {
    const { base, overlay } = await scene()
    const child = await makeOverlay(library, {
      overlay: join(dir, 'child.add-cow'),
      backing: 'ov.add-cow',
      backingFormat: 'add-cow',
    })
    const error = await deleteImageFiles({ path: overlay, library }).catch((e: unknown) => e)
    expect(isEngineError(error, 'HAS_DEPENDENTS')).toBe(true)
    expect((error as Error).message).toContain(`${child} (reads through it)`)
    await access(overlay)
    await access(join(dir, 'ov.raw'))

    // Its base is refused too: the overlay reads through it.
    expect(
      isEngineError(
        await deleteImageFiles({ path: base, library }).catch((e) => e),
        'HAS_DEPENDENTS',
      ),
    ).toBe(true)

    const dry = await deleteImageFiles({ path: child, library, dryRun: true })
    expect(dry.files).toEqual([child, join(dir, 'child.raw')])
    expect(dry.deleted).toBe(false)
    const done = await deleteImageFiles({ path: child, library })
    expect(done.deleted).toBe(true)
    for (const file of done.files) await expect(access(file)).rejects.toThrow()
    expect((await library.load()).images.map((image) => image.path)).not.toContain(child)
    await access(overlay)
    await access(base)
  })

  it('lists but does not refuse for an image that names it and never reads it', async () => {
    const { base, overlay } = await scene()
    await streamOverlay({ overlay, library })
    const result = await deleteImageFiles({ path: base, library })
    expect(result.dependents).toEqual([{ path: overlay, how: 'not-read' }])
    expect(result.deleted).toBe(true)
  })
})

describe('locate', () => {
  it('relinks a moved base, relative inside the folder, after checking size and fingerprint', async () => {
    const { base, overlay } = await scene()
    const expected = await guestView(overlay)
    await mkdir(join(dir, 'bases'))
    const moved = join(dir, 'bases', 'base.raw')
    await rename(base, moved)
    expect(await stateOf(overlay)).toBe('missing')
    const result = await locateBase({ overlay, base: moved, library })
    expect(result).toMatchObject({
      stored: 'bases/base.raw',
      relative: true,
      fingerprint: 'matched',
    })
    const [top] = await imageInfo(overlay)
    expect(top?.['backing-filename']).toBe('bases/base.raw')
    expect(await stateOf(overlay)).toBe('ok')
    expect((await guestView(overlay)).equals(expected)).toBe(true)
  })

  it('stores an absolute name outside the folder', async () => {
    const { base, overlay } = await scene()
    const { path: other, cleanup: done } = await tempDir('addcow-links-other-')
    try {
      const moved = join(other, 'base.raw')
      await copyFile(base, moved)
      const result = await locateBase({ overlay, base: moved, library })
      expect(result.relative).toBe(false)
      expect(result.stored).toBe(moved)
      expect(await stateOf(overlay)).toBe('ok')
    } finally {
      await done()
    }
  })

  it('refuses a file of another size, or with other content, unless forced', async () => {
    const { overlay } = await scene()
    const small = join(dir, 'small.raw')
    await makeSparseRaw(small, 2 * MiB, [])
    const sized = await locateBase({ overlay, base: small, library }).catch((e: unknown) => e)
    expect(isEngineError(sized, 'BASE_CHANGED')).toBe(true)
    expect((sized as Error).message).toContain('is 2097152 bytes')
    expect((sized as Error).message).toContain('recorded at 4194304 bytes')

    const other = join(dir, 'other.raw')
    await makeSparseRaw(other, 4 * MiB, [[0, pattern(4 * MiB, 9)]])
    const content = await locateBase({ overlay, base: other, library }).catch((e: unknown) => e)
    expect(isEngineError(content, 'BASE_CHANGED')).toBe(true)
    expect((content as Error).message).toContain('differs from the fingerprint')
    const [before] = await imageInfo(overlay)
    expect(before?.['backing-filename']).toBe('base.raw')

    const forced = await locateBase({ overlay, base: other, library, force: true })
    expect(forced.fingerprint).toBe('differs')
  })

  it('without a recorded fingerprint, checks the size against the overlay', async () => {
    const { base, overlay } = await scene()
    const elsewhere = libraryIn(join(dir, 'other'))
    const small = join(dir, 'small.raw')
    await makeSparseRaw(small, 2 * MiB, [])
    const error = await locateBase({ overlay, base: small, library: elsewhere }).catch((e) => e)
    expect((error as Error).message).toContain('should be 4194304 bytes')
    const result = await locateBase({ overlay, base, library: elsewhere })
    expect(result.fingerprint).toBe('not-recorded')
  })
})
