import { copyFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isEngineError } from '../../../../main/engine/errors'
import { setFileObserver } from '../../../../main/engine/file'
import type { Library } from '../../../../main/engine/library'
import { checkExitCode, checkImage } from '../../../../main/engine/ops/check'
import { commitOverlay, rollbackCommit } from '../../../../main/engine/ops/commit'
import { canListDataExtents } from '../../../../main/engine/formats/common/sparse'
import { streamOverlay } from '../../../../main/engine/ops/stream'
import { tempDir } from '../../../helpers/tools'
import {
  allocation,
  fileEquals,
  guestView,
  libraryIn,
  makeOverlay,
  makeSparseRaw,
  pattern,
  readSparseFile,
  restoreSparse,
  writeGuest,
} from '../../../helpers/images'

const MiB = 1024 * 1024

/** A whole file, read by its data extents: the 40 MiB images here are mostly holes. */
const readFile = readSparseFile
let dir: string
let cleanup: () => Promise<void>
let library: Library

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-commit-'))
  library = libraryIn(dir)
})
afterEach(async () => {
  setFileObserver(null)
  await cleanup()
})

/** base.raw (4 MiB, data in places) and ov.add-cow on it with a few writes, some partial. */
async function scene(
  options: { size?: number; clusterSize?: number } = {},
): Promise<{ base: string; overlay: string }> {
  const base = join(dir, 'base.raw')
  await makeSparseRaw(base, 4 * MiB, [
    [0, pattern(MiB, 1)],
    [3 * MiB, pattern(512 * 1024, 2)],
  ])
  const overlay = await makeOverlay(library, {
    overlay: join(dir, 'ov.add-cow'),
    backing: 'base.raw',
    backingFormat: 'raw',
    ...(options.size ? { size: options.size } : {}),
    ...(options.clusterSize ? { clusterSize: options.clusterSize } : {}),
  })
  await writeGuest(overlay, [
    [100_000, pattern(70_000, 3)],
    [2 * MiB, pattern(MiB / 2, 4)],
    [4 * MiB - 1000, pattern(1000, 5)],
  ])
  return { base, overlay }
}

describe('commit', () => {
  it('copies every allocated cluster into a raw base and empties the overlay', async () => {
    const { base, overlay } = await scene()
    const expected = await guestView(overlay)
    const result = await commitOverlay({ overlay, library })
    expect(result.emptied).toBe(true)
    expect(result.clusters).toBeGreaterThan(0)
    expect((await readFile(base)).equals(expected)).toBe(true)
    expect((await guestView(overlay)).equals(expected)).toBe(true)
    const bits = await allocation(overlay)
    expect(bits.bits.every((bit) => !bit)).toBe(true)
    expect((await readFile(join(dir, 'ov.raw'))).every((byte) => byte === 0)).toBe(true)
    const report = await checkImage(overlay, { library })
    expect(checkExitCode(report)).toBe(0)
    expect(report['base-fingerprint']).toBe('unchanged')
  })

  it('keeps the overlay with keep (-d), opening it read-only', async () => {
    const { base, overlay } = await scene()
    const before = await allocation(overlay)
    const expected = await guestView(overlay)
    const metaBefore = await readFile(overlay)
    const result = await commitOverlay({ overlay, library, keep: true })
    expect(result.emptied).toBe(false)
    expect((await readFile(base)).equals(expected)).toBe(true)
    expect(await allocation(overlay)).toEqual(before)
    expect((await readFile(overlay)).equals(metaBefore)).toBe(true)
  })

  it('commits the top of a 3-layer chain into its direct add-cow backing only', async () => {
    const base = join(dir, 'base.raw')
    await makeSparseRaw(base, 2 * MiB, [[0, pattern(2 * MiB, 7)]])
    const mid = await makeOverlay(library, {
      overlay: join(dir, 'mid.add-cow'),
      backing: 'base.raw',
      backingFormat: 'raw',
      clusterSize: 4096,
    })
    await writeGuest(mid, [[10_000, pattern(5000, 8)]])
    const top = await makeOverlay(library, {
      overlay: join(dir, 'top.add-cow'),
      backing: 'mid.add-cow',
      backingFormat: 'add-cow',
    })
    await writeGuest(top, [
      [3000, pattern(200, 9)],
      [MiB + 7, pattern(70_000, 10)],
    ])
    const baseBytes = await readFile(base)
    const expected = await guestView(top)
    await commitOverlay({ overlay: top, library, force: true })
    expect((await guestView(mid)).equals(expected)).toBe(true)
    expect((await guestView(top)).equals(expected)).toBe(true)
    expect((await readFile(base)).equals(baseBytes)).toBe(true)
    expect(checkExitCode(await checkImage(mid, { library }))).toBe(0)
    expect(checkExitCode(await checkImage(top, { library }))).toBe(0)
  })

  it('grows a smaller base to the overlay size, as qemu-img commit does', async () => {
    const { base, overlay } = await scene({ size: 6 * MiB })
    await writeGuest(overlay, [[5 * MiB, pattern(4096, 11)]])
    const expected = await guestView(overlay)
    const result = await commitOverlay({ overlay, library })
    expect(result.grewBase).toEqual([4 * MiB, 6 * MiB])
    expect((await readFile(base)).equals(expected)).toBe(true)
  })

  it('commits an ALL_ALLOCATED overlay whole and empties it', async () => {
    const { base, overlay } = await scene()
    await streamOverlay({ overlay, library })
    expect((await allocation(overlay)).allAllocated).toBe(true)
    const expected = await guestView(overlay)
    await commitOverlay({ overlay, library })
    expect((await readFile(base)).equals(expected)).toBe(true)
    const after = await allocation(overlay)
    expect(after.allAllocated).toBe(false)
    expect(after.bits.every((bit) => !bit)).toBe(true)
    expect((await guestView(overlay)).equals(expected)).toBe(true)
  })

  it('refuses when another overlay shares the base, unless forced', async () => {
    const { base, overlay } = await scene()
    const other = await makeOverlay(library, {
      overlay: join(dir, 'other.add-cow'),
      backing: 'base.raw',
      backingFormat: 'raw',
    })
    const baseBytes = await readFile(base)
    const error = await commitOverlay({ overlay, library }).catch((caught: unknown) => caught)
    expect(isEngineError(error, 'CONFIRMATION_REQUIRED')).toBe(true)
    expect(String((error as Error).message)).toContain(other)
    expect((await readFile(base)).equals(baseBytes)).toBe(true)
    const result = await commitOverlay({ overlay, library, force: true })
    expect(result.dependents.map((entry) => entry.path)).toEqual([other])
  })

  it('finds overlays on the base through the library, in other folders', async () => {
    const { base, overlay } = await scene()
    const { mkdir } = await import('node:fs/promises')
    await mkdir(join(dir, 'elsewhere'))
    const far = await makeOverlay(library, {
      overlay: join(dir, 'elsewhere', 'far.add-cow'),
      backing: base,
      backingFormat: 'raw',
    })
    const error = await commitOverlay({ overlay, library }).catch((caught: unknown) => caught)
    expect(isEngineError(error, 'CONFIRMATION_REQUIRED')).toBe(true)
    expect(String((error as Error).message)).toContain(far)
  })

  it('refuses a base that changed since the overlay was created, unless accepted', async () => {
    const { base, overlay } = await scene()
    const { open } = await import('node:fs/promises')
    const handle = await open(base, 'r+')
    await handle.write(Buffer.from('changed'), 0, 7, 2 * MiB + 100)
    await handle.close()
    const error = await commitOverlay({ overlay, library }).catch((caught: unknown) => caught)
    expect(isEngineError(error, 'BASE_CHANGED')).toBe(true)
    expect(String((error as Error).message)).toContain(base)
    await commitOverlay({ overlay, library, acceptBase: true })
  })

  it('undo journal: rollback restores a raw base byte for byte and gives the overlay its clusters back', async () => {
    const { base, overlay } = await scene({ size: 5 * MiB })
    const baseBefore = await readFile(base)
    const view = await guestView(overlay)
    const undo = join(dir, 'commit.undo')
    await commitOverlay({ overlay, library, undo })
    expect((await readFile(base)).equals(view)).toBe(true)
    const result = await rollbackCommit({ journal: undo, library })
    expect(result.overlayClusters).toBeGreaterThan(0)
    expect((await readFile(base)).equals(baseBefore)).toBe(true)
    expect((await stat(base)).size).toBe(4 * MiB)
    expect((await guestView(overlay)).equals(view)).toBe(true)
    expect((await rollbackCommit({ journal: undo, library })).alreadyDone).toBe(true)
    const again = await commitOverlay({ overlay, library, undo }).catch((caught: unknown) => caught)
    expect(isEngineError(again, 'BAD_ARGUMENT')).toBe(true)
  })

  it('undo journal: rollback restores an add-cow base (both files) byte for byte', async () => {
    const root = join(dir, 'root.raw')
    await makeSparseRaw(root, 2 * MiB, [[0, pattern(2 * MiB, 20)]])
    const mid = await makeOverlay(library, {
      overlay: join(dir, 'mid.add-cow'),
      backing: 'root.raw',
      backingFormat: 'raw',
      clusterSize: 128 * 1024,
    })
    await writeGuest(mid, [[300_000, pattern(1000, 21)]])
    const top = await makeOverlay(library, {
      overlay: join(dir, 'top.add-cow'),
      backing: 'mid.add-cow',
      backingFormat: 'add-cow',
      clusterSize: 4096,
    })
    await writeGuest(top, [
      [5000, pattern(3000, 22)],
      [301_000, pattern(100, 23)],
      [MiB + 4096 * 3, pattern(4096, 24)],
    ])
    const midBefore = await readFile(mid)
    const midImageBefore = await readFile(join(dir, 'mid.raw'))
    const topView = await guestView(top)
    const undo = join(dir, 'undo.journal')
    await commitOverlay({ overlay: top, library, undo })
    expect((await guestView(mid)).equals(topView)).toBe(true)
    await rollbackCommit({ journal: undo, library })
    expect((await readFile(mid)).equals(midBefore)).toBe(true)
    expect((await readFile(join(dir, 'mid.raw'))).equals(midImageBefore)).toBe(true)
    expect((await guestView(top)).equals(topView)).toBe(true)
  })

  it('refuses a rollback after the base changed again, unless forced', async () => {
    const { base, overlay } = await scene()
    const undo = join(dir, 'c.undo')
    await commitOverlay({ overlay, library, undo })
    const bytes = await readFile(base)
    bytes[12345] = (bytes[12345]! + 1) & 0xff
    await writeFile(base, bytes)
    const error = await rollbackCommit({ journal: undo, library }).catch(
      (caught: unknown) => caught,
    )
    expect(isEngineError(error, 'BASE_CHANGED')).toBe(true)
  })

  it('stops cleanly on an abort and finishes when run again', async () => {
    const { base, overlay } = await scene({ clusterSize: 4096 })
    const expected = await guestView(overlay)
    const controller = new AbortController()
    let calls = 0
    const error = await commitOverlay({
      overlay,
      library,
      signal: controller.signal,
      onProgress: () => {
        if (++calls === 1) controller.abort()
      },
    }).catch((caught: unknown) => caught)
    expect(isEngineError(error, 'ABORTED')).toBe(true)
    expect((await guestView(overlay)).equals(expected)).toBe(true)
    expect(checkExitCode(await checkImage(overlay, { library, acceptBase: true }))).toBe(0)
    await commitOverlay({ overlay, library, acceptBase: true })
    expect((await readFile(base)).equals(expected)).toBe(true)
  })
})

/**
 * Crash at every point: fail the k-th file write, truncate or sync and every call after it (the
 * process dies there; what reached the kernel before stays, as with kill -9), then run the same
 * operation again and compare with an uninterrupted run.
 */
async function crashEverywhere(
  prepare: () => Promise<string[]>,
  operation: () => Promise<unknown>,
  verify: (files: string[]) => Promise<void>,
): Promise<number> {
  const files = await prepare()
  const saved = await Promise.all(files.map((file) => readFile(file)))
  let events = 0
  setFileObserver({ before: () => void events++ })
  await operation()
  setFileObserver(null)
  await verify(files)
  for (let crashAt = 1; crashAt <= events; crashAt++) {
    await Promise.all(files.map((file, index) => restoreSparse(file, saved[index]!)))
    let count = 0
    setFileObserver({
      before: () => {
        if (++count >= crashAt) throw new Error(`simulated crash at file event ${crashAt}`)
      },
    })
    await operation().catch(() => undefined)
    setFileObserver(null)
    await operation()
    await verify(files)
  }
  return events
}

describe('crash consistency', () => {
  it('commit: a crash at any file operation is finished by running it again, with the same bytes', async () => {
    let reference: Buffer | null = null
    let view: Buffer | null = null
    const events = await crashEverywhere(
      async () => {
        const { base, overlay } = await scene({ clusterSize: 65536 })
        view = await guestView(overlay)
        return [base, overlay, join(dir, 'ov.raw')]
      },
      () => commitOverlay({ overlay: join(dir, 'ov.add-cow'), library, acceptBase: true }),
      async ([base, overlay]) => {
        const bytes = await readFile(base!)
        reference ??= bytes
        expect(bytes.equals(reference)).toBe(true)
        expect(bytes.equals(view!)).toBe(true)
        expect((await allocation(overlay!)).bits.every((bit) => !bit)).toBe(true)
        expect(checkExitCode(await checkImage(overlay!, { library }))).toBe(0)
      },
    )
    expect(events).toBeGreaterThan(5)
  })

  it('commit of an overlay big enough to be emptied in phases: a crash anywhere, a rerun, the same bytes', async () => {
    // 40 MiB at 4 KiB clusters: three emptying phases of 16 MiB, 16 MiB and 8 MiB, each with
    // data, one write across the first boundary; the crash lands between phases too.
    let reference: Buffer | null = null
    let view: Buffer | null = null
    const image = join(dir, 'big.raw')
    const events = await crashEverywhere(
      async () => {
        const base = join(dir, 'big-base.raw')
        await makeSparseRaw(base, 40 * MiB, [
          [0, pattern(MiB, 6)],
          [20 * MiB, pattern(MiB, 7)],
        ])
        const overlay = await makeOverlay(library, {
          overlay: join(dir, 'big.add-cow'),
          backing: 'big-base.raw',
          backingFormat: 'raw',
          clusterSize: 4096,
        })
        await writeGuest(overlay, [
          [MiB + 100, pattern(200_000, 8)],
          [16 * MiB - 3000, pattern(9000, 9)],
          [20 * MiB + 4096, pattern(70_000, 10)],
          [36 * MiB, pattern(MiB, 11)],
        ])
        view = await guestView(overlay)
        return [base, overlay, image]
      },
      () => commitOverlay({ overlay: join(dir, 'big.add-cow'), library, acceptBase: true }),
      async ([base, overlay]) => {
        // Compared by data extents, not read whole: this runs after each of some hundred cuts.
        reference ??= await readFile(base!)
        expect(await fileEquals(base!, reference)).toBe(true)
        expect(await fileEquals(base!, view!)).toBe(true)
        expect((await allocation(overlay!)).bits.every((bit) => !bit)).toBe(true)
        expect(checkExitCode(await checkImage(overlay!, { library }))).toBe(0)
        // Every phase freed its part of the image file (holes punched where the filesystem can).
        if (canListDataExtents()) expect((await stat(image)).blocks).toBe(0)
      },
    )
    expect(events).toBeGreaterThan(12)
  })

  it('commit with an undo journal: a crash anywhere, a rerun, then a rollback restores the base', async () => {
    let original: Buffer | null = null
    const undo = join(dir, 'crash.undo')
    await crashEverywhere(
      async () => {
        const { base } = await scene()
        original = await readFile(base)
        return [base, join(dir, 'ov.add-cow'), join(dir, 'ov.raw')]
      },
      async () => {
        await commitOverlay({ overlay: join(dir, 'ov.add-cow'), library, acceptBase: true, undo })
      },
      async ([base]) => {
        await rollbackCommit({ journal: undo, library, force: true })
        expect((await readFile(base!)).equals(original!)).toBe(true)
        const { rm } = await import('node:fs/promises')
        await rm(undo, { force: true })
        await copyFile(base!, base!) // keep the base as the scene made it for the next round
      },
    )
  })

  it('stream: a crash at any file operation is finished by running it again', async () => {
    let view: Buffer | null = null
    await crashEverywhere(
      async () => {
        const { base, overlay } = await scene({ clusterSize: 65536 })
        view = await guestView(overlay)
        return [base, overlay, join(dir, 'ov.raw')]
      },
      () => streamOverlay({ overlay: join(dir, 'ov.add-cow'), library, acceptBase: true }),
      async ([, overlay, image]) => {
        expect((await readFile(image!)).equals(view!)).toBe(true)
        expect((await allocation(overlay!)).allAllocated).toBe(true)
        expect(checkExitCode(await checkImage(overlay!, { library }))).toBe(0)
      },
    )
  })
})
