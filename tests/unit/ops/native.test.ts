import { open, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import fc from 'fast-check'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isEngineError } from '../../../main/engine/errors'
import { BlockFile } from '../../../main/engine/file'
import { native, nativeStatus } from '../../../main/engine/native/index'
import { lockFile } from '../../../main/engine/ops/lock'
import { copyRange, dataExtentsIn, punchOrZero } from '../../../main/engine/formats/common/sparse'
import { IntervalSet, UndoJournal, type UndoHeader } from '../../../main/engine/ops/undo-journal'
import { tempDir } from '../../helpers/tools'
import { pattern } from './fixtures'

let dir: string
let cleanup: () => Promise<void>
beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-native-'))
})
afterEach(() => cleanup())

const status = nativeStatus()
if (!status.loaded) {
  if (process.env.CI === 'true') throw new Error(`CI needs the native addon: ${status.reason}`)
  console.warn(`SKIP native tests: ${status.reason}`)
}

describe.runIf(status.loaded)('native addon', () => {
  it('reports its features', () => {
    expect(status.features).toMatchObject({
      punchHole: true,
      seekData: true,
      lock: true,
      copyFileRange: true,
    })
  })

  it('lists data extents and punches holes', async () => {
    const path = join(dir, 'sparse')
    await writeFile(path, Buffer.alloc(0))
    const file = await BlockFile.open(path, true)
    try {
      await file.truncate(4 * 1024 * 1024)
      await file.writeAt(pattern(8192, 1), 65536)
      await file.writeAt(pattern(4096, 2), 3 * 1024 * 1024)
      expect(await dataExtentsIn(file, 0, 4 * 1024 * 1024)).toEqual([
        [65536, 65536 + 8192],
        [3 * 1024 * 1024, 3 * 1024 * 1024 + 4096],
      ])
      expect(await dataExtentsIn(file, 65536 + 4096, 3 * 1024 * 1024)).toEqual([
        [65536 + 4096, 65536 + 8192],
      ])
      expect(await punchOrZero(file, 65536, 8192)).toBe('punched')
      expect(await dataExtentsIn(file, 0, 4 * 1024 * 1024)).toEqual([
        [3 * 1024 * 1024, 3 * 1024 * 1024 + 4096],
      ])
      const back = Buffer.alloc(8192, 1)
      await file.readAt(back, 65536)
      expect(back.every((byte) => byte === 0)).toBe(true)
    } finally {
      await file.close()
    }
  })

  it('copies ranges in the kernel, zeros past the source end', async () => {
    const source = join(dir, 'source')
    const target = join(dir, 'target')
    await writeFile(source, pattern(100_000, 3))
    await writeFile(target, Buffer.alloc(300_000, 0xaa))
    const input = await BlockFile.open(source, false)
    const output = await BlockFile.open(target, true)
    try {
      await copyRange(input, 1000, output, 5000, 150_000)
    } finally {
      await input.close()
      await output.close()
    }
    const bytes = await readFile(target)
    expect(bytes.subarray(5000, 5000 + 99_000).equals(pattern(100_000, 3).subarray(1000))).toBe(
      true,
    )
    expect(bytes.subarray(5000 + 99_000, 155_000).every((byte) => byte === 0)).toBe(true)
    expect(bytes[4999]).toBe(0xaa)
    expect(bytes[155_000]).toBe(0xaa)
  })

  it('throws errno errors with their code', async () => {
    const path = join(dir, 'ro')
    await writeFile(path, 'x')
    const handle = await open(path, 'r')
    try {
      expect(() => native()!.punchHole(handle.fd, 0, 1)).toThrow(
        expect.objectContaining({ code: 'EBADF' }),
      )
      expect(() => native()!.punchHole(handle.fd, -1, 1)).toThrow(RangeError)
    } finally {
      await handle.close()
    }
  })

  it('takes QEMU-compatible locks: exclusive excludes everything, shared excludes writers', async () => {
    const path = join(dir, 'locked')
    await writeFile(path, Buffer.alloc(4096))
    const exclusive = await lockFile(path, 'exclusive', 'test')
    expect(exclusive.kind).toBe('qemu-ofd')
    const refused = await lockFile(path, 'shared', 'test').catch((caught: unknown) => caught)
    expect(isEngineError(refused, 'BUSY')).toBe(true)
    expect(String((refused as Error).message)).toContain(path)
    await exclusive.release()
    const reader = await lockFile(path, 'shared', 'test')
    const second = await lockFile(path, 'shared', 'test')
    const writer = await lockFile(path, 'exclusive', 'test').catch((caught: unknown) => caught)
    expect(isEngineError(writer, 'BUSY')).toBe(true)
    await reader.release()
    await second.release()
    await (await lockFile(path, 'exclusive', 'test')).release()
  })
})

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
