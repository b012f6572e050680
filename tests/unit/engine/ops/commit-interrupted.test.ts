import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isEngineError } from '../../../../main/engine/errors'
import type { Library } from '../../../../main/engine/library'
import { checkImage } from '../../../../main/engine/ops/check'
import { commitOverlay, rollbackCommit } from '../../../../main/engine/ops/commit'
import { guardBaseDrift } from '../../../../main/engine/ops/drift'
import { openImage } from '../../../../main/engine/open'
import { tempDir } from '../../../helpers/tools'
import {
  fileEquals,
  guestView,
  libraryIn,
  makeOverlay,
  makeSparseRaw,
  pattern,
  readSparseFile,
  writeGuest,
} from '../../../helpers/images'

// Issue 12 item 4: a commit cancelled part way is a state the user can read and leave: the
// base holds part of the overlay, the overlay reads the same and is not flagged "base
// changed" by its own commit, the library says where it stands, and it resumes or rolls back.

const MiB = 1024 * 1024
let dir: string
let cleanup: () => Promise<void>
let library: Library

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-commit-stop-'))
  library = libraryIn(dir)
})
afterEach(async () => {
  await cleanup()
})

/**
 * The base's content, made once for the file: a fresh 64 MiB buffer per test cost more (page
 * faults) than the commits it is there for. Never written into.
 */
let baseData: Buffer | null = null

/** A 64 MiB base and an overlay with data in each of its four 16 MiB windows. */
async function scene(): Promise<{ base: string; overlay: string; original: Buffer }> {
  const base = join(dir, 'base.raw')
  baseData ??= pattern(64 * MiB, 1)
  await makeSparseRaw(base, 64 * MiB, [[0, baseData]])
  const overlay = await makeOverlay(library, {
    overlay: join(dir, 'ov.add-cow'),
    backing: 'base.raw',
    backingFormat: 'raw',
  })
  await writeGuest(
    overlay,
    [0, 1, 2, 3].map((window) => [window * 16 * MiB + MiB, pattern(2 * MiB, 10 + window)]),
  )
  return { base, overlay, original: baseData }
}

/** Commit `overlay`, cancelled once the first window of the walk is done. */
async function cancelledCommit(overlay: string, undo?: string): Promise<unknown> {
  const controller = new AbortController()
  return commitOverlay({
    overlay,
    library,
    ...(undo ? { undo } : {}),
    signal: controller.signal,
    onProgress: (done) => {
      if (done > 0) controller.abort()
    },
  }).catch((caught: unknown) => caught)
}

describe('an interrupted commit', () => {
  for (const journaled of [false, true]) {
    it(`says what the base holds and keeps the overlay trusted (${journaled ? 'with' : 'without'} a journal)`, async () => {
      const { base, overlay, original } = await scene()
      const expected = await guestView(overlay)
      const undo = journaled ? join(dir, 'ov.undo') : undefined
      const error = await cancelledCommit(overlay, undo)
      expect(isEngineError(error, 'ABORTED')).toBe(true)
      const message = (error as Error).message
      expect(message).toContain('was cancelled after 2 MiB of 8 MiB')
      expect(message).toContain("The base now holds the overlay's data at 1 MiB–3 MiB")
      expect(message).toContain('The overlay still reads the same')
      expect(message).toContain(journaled ? `--rollback ${undo}` : 'cannot be rolled back')

      // The base holds the first window's data, and only that.
      const now = await readSparseFile(base)
      expect(now.subarray(MiB, 3 * MiB).equals(expected.subarray(MiB, 3 * MiB))).toBe(true)
      expect(now.subarray(3 * MiB).equals(original.subarray(3 * MiB))).toBe(true)
      expect(now.subarray(0, MiB).equals(original.subarray(0, MiB))).toBe(true)
      expect((await guestView(overlay)).equals(expected)).toBe(true)

      // Its own commit does not make the overlay's base "changed": check and launch accept it.
      expect((await checkImage(overlay, { library }))['base-fingerprint']).toBe('unchanged')
      const opened = await openImage(overlay, { readOnly: true, policy: await library.policy() })
      try {
        const guard = { library, acceptBase: false, doing: 'run it' }
        expect((await guardBaseDrift(opened, guard)).status).toBe('unchanged')
      } finally {
        await opened.close()
      }

      const record = await library.interruptedCommit(overlay)
      expect(record).toMatchObject({
        overlay,
        base,
        journal: undo ?? null,
        bytesCommitted: 2 * MiB,
        bytesTotal: 8 * MiB,
        ranges: [[MiB, 3 * MiB]],
        code: 'ABORTED',
      })

      // Resume: the same commit again, with no --accept-base; the library forgets the state.
      const result = await commitOverlay({ overlay, library, ...(undo ? { undo } : {}) })
      expect(result.resumed).toBe(journaled)
      expect(await fileEquals(base, expected)).toBe(true)
      expect((await guestView(overlay)).equals(expected)).toBe(true)
      expect(await library.interruptedCommit(overlay)).toBeNull()
    })
  }

  it('rolls a partial journaled commit back: the base as it was, the overlay unchanged', async () => {
    const { base, overlay, original } = await scene()
    const expected = await guestView(overlay)
    const undo = join(dir, 'ov.undo')
    expect(isEngineError(await cancelledCommit(overlay, undo), 'ABORTED')).toBe(true)
    expect(await fileEquals(base, original)).toBe(false)
    const result = await rollbackCommit({ journal: undo, library })
    expect(result.restoredBytes).toBe(2 * MiB)
    expect(result.overlayClusters).toBe(0)
    expect(await fileEquals(base, original)).toBe(true)
    expect((await guestView(overlay)).equals(expected)).toBe(true)
    expect(await library.interruptedCommit(overlay)).toBeNull()
    expect((await checkImage(overlay, { library }))['base-fingerprint']).toBe('unchanged')
  })

  it('records nothing when the commit stopped before writing the base', async () => {
    const { overlay } = await scene()
    const controller = new AbortController()
    controller.abort()
    const error = await commitOverlay({ overlay, library, signal: controller.signal }).catch(
      (caught: unknown) => caught,
    )
    expect(isEngineError(error, 'ABORTED')).toBe(true)
    expect((error as Error).message).not.toContain('The base now holds')
    expect(await library.interruptedCommit(overlay)).toBeNull()
  })
})
