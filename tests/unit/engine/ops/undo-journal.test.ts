import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import fc from 'fast-check'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isEngineError } from '../../../../main/engine/errors'
import { IntervalSet, UndoJournal, type UndoHeader } from '../../../../main/engine/ops/undo-journal'
import { tempDir } from '../../../helpers/tools'
import { pattern } from '../../../helpers/images'

let dir: string
let cleanup: () => Promise<void>
beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-undo-'))
})
afterEach(() => cleanup())

describe('interval set', () => {
  it('matches a model for any sequence of additions', () => {
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(200), fc.nat(40)), { maxLength: 30 }),
        fc.nat(200),
        fc.nat(60),
        (adds, start, length) => {
          const set = new IntervalSet()
          const model = new Uint8Array(300)
          for (const [from, size] of adds) {
            set.add(from, from + size)
            model.fill(1, from, from + size)
          }
          for (let i = 1; i < set.intervals.length; i++)
            expect(set.intervals[i - 1]![1]).toBeLessThan(set.intervals[i]![0])
          const missing = set.missing(start, start + length)
          const expected = new Uint8Array(300)
          for (const [a, b] of missing) expected.fill(1, a, b)
          for (let i = start; i < start + length; i++) expect(expected[i]).toBe(model[i] ? 0 : 1)
        },
      ),
    )
  })
})

describe('undo journal', () => {
  const header: UndoHeader = {
    kind: 'addcow-commit-undo',
    createdAt: '2024-01-01T00:00:00.000Z',
    overlay: '/x/ov.add-cow',
    overlayImage: '/x/ov.raw',
    overlayClusterSize: 65536,
    base: '/x/base.raw',
    baseFormat: 'raw',
    baseDataFile: '/x/base.raw',
    baseMetadataFile: null,
    baseClusterSize: 1,
    baseFeaturesBefore: null,
    baseSizeBefore: 1000,
    baseDataFileLengthBefore: 1000,
    baseMetadataLengthBefore: null,
  }

  it('reads back its records and state, and cuts a torn last record', async () => {
    const path = join(dir, 'j.undo')
    const journal = await UndoJournal.create(path, header)
    journal.addRange(0, 65536)
    journal.addData(100, pattern(5000, 1), false)
    await journal.sync()
    await journal.setState({ state: 'copied', at: 'now' })
    journal.addData(9000, pattern(300, 2), true)
    await journal.sync()
    await journal.close()
    const whole = await readFile(path)
    // A torn append: half of the last record.
    await writeFile(path, whole.subarray(0, whole.length - 100))
    const reopened = await UndoJournal.open(path, true)
    expect(reopened.header).toEqual(header)
    expect(reopened.state).toBe('copied')
    expect(reopened.records.map((record) => [record.offset, record.length])).toEqual([[100, 5000]])
    expect(reopened.committed.intervals).toEqual([[0, 65536]])
    const data = Buffer.alloc(5000)
    await reopened.readData(reopened.records[0]!, data)
    expect(data.equals(pattern(5000, 1))).toBe(true)
    await reopened.close()
    expect(
      await UndoJournal.create(path, header).catch((caught: unknown) => caught),
    ).toBeInstanceOf(Error)
  })

  it('refuses a file that is not a journal, naming it', async () => {
    const path = join(dir, 'not.undo')
    await writeFile(path, Buffer.alloc(5000, 7))
    const error = await UndoJournal.open(path, false).catch((caught: unknown) => caught)
    expect(isEngineError(error, 'CORRUPT_IMAGE')).toBe(true)
    expect(String((error as Error).message)).toContain(path)
  })
})
