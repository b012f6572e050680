import { open, readFile, stat, truncate } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { makePolicy } from '../../../../main/engine/names'
import type { Library } from '../../../../main/engine/library'
import { checkExitCode, checkImage, type CheckReport } from '../../../../main/engine/ops/check'
import { createOverlay } from '../../../../main/engine/ops/create'
import { rebaseOverlay } from '../../../../main/engine/ops/rebase'
import {
  readHeaderFile as readAddCowHeader,
  rewriteHeader,
} from '../../../../main/engine/formats/add-cow/edit'
import { isEngineError } from '../../../../main/engine/errors'
import { tempDir } from '../../../helpers/tools'
import {
  allocation,
  guestView,
  libraryIn,
  makeOverlay,
  makeSparseRaw,
  pattern,
  writeGuest,
} from '../../../helpers/images'

const MiB = 1024 * 1024
let dir: string
let cleanup: () => Promise<void>
let library: Library
let overlay: string

async function poke(path: string, offset: number, bytes: number[] | Buffer): Promise<void> {
  const handle = await open(path, 'r+')
  const data = Buffer.from(bytes)
  await handle.write(data, 0, data.length, offset)
  await handle.close()
}

function codes(report: CheckReport): string[] {
  return report.problems.filter((problem) => !problem.repaired).map((problem) => problem.code)
}

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-check-'))
  library = libraryIn(dir)
  await makeSparseRaw(join(dir, 'base.raw'), 4 * MiB, [[0, pattern(MiB, 1)]])
  overlay = await makeOverlay(library, {
    overlay: join(dir, 'ov.add-cow'),
    backing: 'base.raw',
    backingFormat: 'raw',
  })
  await writeGuest(overlay, [[65536, pattern(65536 * 3, 2)]])
})
afterEach(() => cleanup())

describe('check finds every problem, with the offending value', () => {
  it('passes a clean overlay with the qemu-img ImageCheck keys', async () => {
    const report = await checkImage(overlay, { library })
    expect(checkExitCode(report)).toBe(0)
    expect(report).toMatchObject({
      format: 'add-cow',
      'check-errors': 0,
      corruptions: 0,
      leaks: 0,
      'total-clusters': 64,
      'allocated-clusters': 3,
      'image-end-offset': 131072,
      'leak-scan': 'done',
      'base-fingerprint': 'unchanged',
    })
  })

  it('says a raw file has no check (exit 63)', async () => {
    const report = await checkImage(join(dir, 'base.raw'))
    expect(report.unsupported).toBe(true)
    expect(checkExitCode(report)).toBe(63)
  })

  it.each([
    ['magic', 0, [0x41, 0x43, 0x4f, 0x58], 'magic', '0x584f4341'],
    ['cluster_bits', 20, [30, 0, 0, 0], 'cluster-bits', 30],
    ['header_size', 40, [0, 0x20, 0, 0], 'header-size', 8192],
    ['backing name offset', 4, [70, 0, 0, 0], 'backing-name-bounds', 70],
    ['backing name length zero', 8, [0, 0, 0, 0], 'backing-name-bounds', 76],
    ['image name length', 16, [0xff, 0xff, 0, 0], 'image-name-bounds', 65535],
    ['image name offset overlapping', 12, [77, 0, 0, 0], 'name-overlap', 77],
    [
      'backing format without NUL',
      44,
      Buffer.from('rawrawrawrawrawr'),
      'backing-format',
      '"rawrawrawrawrawr"',
    ],
    ['image format not printable', 60, [0x01, 0], 'image-format', JSON.stringify('\u0001')],
  ])('header: %s', async (_label, offset, bytes, code, value) => {
    await poke(overlay, offset, bytes)
    const report = await checkImage(overlay, { library, format: 'add-cow' })
    expect(checkExitCode(report)).toBe(2)
    const problem = report.problems.find((entry) => entry.code === code)
    expect(problem, JSON.stringify(report.problems)).toBeDefined()
    expect(problem!.value).toBe(value)
    expect(problem!.message).toContain(overlay)
  })

  it('reports unknown incompatible features as "could not check" (exit 1)', async () => {
    await poke(overlay, 24, [4])
    const report = await checkImage(overlay, { library })
    expect(codes(report)).toEqual(['incompatible-features'])
    expect(checkExitCode(report)).toBe(1)
  })

  it('finds non-zero header padding; -r leaks leaves it, -r all zeroes it', async () => {
    await poke(overlay, 4000, [1, 2])
    await poke(overlay, 60 + 5, [9])
    let report = await checkImage(overlay, { library })
    const padding = report.problems.filter((problem) => problem.code === 'header-padding')
    expect(padding.map((problem) => problem.offset).sort((a, b) => a! - b!)).toEqual([65, 4000])
    expect(checkExitCode(report)).toBe(2)
    report = await checkImage(overlay, { library, repair: 'leaks' })
    expect(checkExitCode(report)).toBe(2)
    report = await checkImage(overlay, { library, repair: 'all' })
    expect(checkExitCode(report)).toBe(0)
    expect(report['corruptions-fixed']).toBe(2)
    const bytes = await readFile(overlay)
    expect([bytes[4000], bytes[4001], bytes[65]]).toEqual([0, 0, 0])
  })

  it('finds an ALL_ALLOCATED add-cow file cut to its header (corruption), and fixes its length', async () => {
    const flat = join(dir, 'flat.add-cow')
    await createOverlay({ overlay: flat, size: 4 * MiB, clusterSize: 65536 })
    await writeGuest(flat, [[100_000, pattern(200_000, 3)]])
    const view = await guestView(flat)
    await truncate(flat, 65536)
    let report = await checkImage(flat, { library })
    expect(report.problems[0]).toMatchObject({
      code: 'metadata-file-too-short',
      severity: 'corruption',
      value: 65536,
      expected: 131072,
    })
    expect(checkExitCode(report)).toBe(2)
    report = await checkImage(flat, { library, repair: 'all' })
    expect(checkExitCode(report)).toBe(0)
    expect((await stat(flat)).size).toBe(131072)
    expect((await guestView(flat)).equals(view)).toBe(true)
  })

  it('finds an add-cow file too short (corruption) and too long (leak), and fixes its length', async () => {
    await truncate(overlay, 100_000)
    let report = await checkImage(overlay, { library })
    expect(report.problems[0]).toMatchObject({
      code: 'metadata-file-too-short',
      value: 100_000,
      expected: 131072,
    })
    expect(checkExitCode(report)).toBe(2)
    report = await checkImage(overlay, { library, repair: 'all' })
    expect(checkExitCode(report)).toBe(0)
    expect((await stat(overlay)).size).toBe(131072)

    await truncate(overlay, 200_000)
    report = await checkImage(overlay, { library })
    expect(report.problems[0]).toMatchObject({
      code: 'metadata-file-too-long',
      value: 200_000,
      severity: 'leak',
    })
    expect(checkExitCode(report)).toBe(3)
    report = await checkImage(overlay, { library, repair: 'leaks' })
    expect(checkExitCode(report)).toBe(0)
    expect(report['leaks-fixed']).toBe(1)
    expect((await stat(overlay)).size).toBe(131072)
  })

  it('finds set bits past the last cluster and clears them with -r all', async () => {
    await truncate(join(dir, 'ov.raw'), 4 * MiB - 3 * 65536)
    // 61 clusters: bits 61..63 of byte 7 must be 0.
    await poke(overlay, 65536 + 7, [0xe0])
    let report = await checkImage(overlay, { library })
    expect(report.problems.find((problem) => problem.code === 'stray-bits')).toMatchObject({
      value: '0xe0',
      count: 3,
    })
    report = await checkImage(overlay, { library, repair: 'all' })
    expect(checkExitCode(report)).toBe(0)
    expect((await readFile(overlay))[65536 + 7]).toBe(0)
  })

  it('keeps a copy of the header and bitmap before a repair rewrites them, and names it', async () => {
    await truncate(join(dir, 'ov.raw'), 4 * MiB - 3 * 65536)
    await poke(overlay, 65536 + 7, [0xe0])
    const before = await readFile(overlay)
    const report = await checkImage(overlay, { library, repair: 'all' })
    const kept = report.repairs.find((line) => line.startsWith('Kept a copy'))
    const copy = /: (\/\S+\.before-repair-[0-9-]+)\.$/.exec(kept ?? '')?.[1]
    expect(copy, report.repairs.join('\n')).toBeDefined()
    expect((await readFile(copy!)).equals(before)).toBe(true)
    expect((await readFile(overlay)).equals(before)).toBe(false)
    // A leaks-only repair rewrites no header or bitmap byte, so it keeps no copy.
    const clean = await checkImage(overlay, { library, repair: 'leaks' })
    expect(clean.repairs.some((line) => line.startsWith('Kept a copy'))).toBe(false)
  })

  it('finds an image file shorter than the bitmap implies', async () => {
    await poke(overlay, 65536 + 7, [0x80])
    await truncate(join(dir, 'ov.raw'), 2 * MiB)
    let report = await checkImage(overlay, { library })
    const problem = report.problems.find((entry) => entry.code === 'image-file-too-short')
    expect(problem).toMatchObject({ value: 2 * MiB, expected: 64 * 65536, severity: 'corruption' })
    // It says what happened and what the repair does, without claiming data the guest can
    // read was lost.
    expect(problem?.message).toContain('past the end of the disk')
    expect(problem?.message).toContain('the repair only clears those bits')
    expect(problem?.message).not.toContain('is lost')
    report = await checkImage(overlay, { library, repair: 'all' })
    expect(checkExitCode(report)).toBe(0)
  })

  it('finds ALL_ALLOCATED set over a partial bitmap, and repairs it without changing the guest view', async () => {
    await poke(overlay, 32, [1])
    const view = await guestView(overlay)
    let report = await checkImage(overlay, { library })
    expect(
      report.problems.find((problem) => problem.code === 'all-allocated-inconsistent'),
    ).toMatchObject({ count: 61 })
    report = await checkImage(overlay, { library, repair: 'all' })
    expect(checkExitCode(report)).toBe(0)
    expect((await guestView(overlay)).equals(view)).toBe(true)
    expect((await allocation(overlay)).bits.every(Boolean)).toBe(true)
  })

  it('warns when every bit is set but ALL_ALLOCATED is not, and -r all sets it', async () => {
    await poke(overlay, 65536, Buffer.alloc(8, 0xff))
    let report = await checkImage(overlay, { library })
    expect(codes(report)).toEqual(['all-allocated-missing'])
    expect(checkExitCode(report)).toBe(0)
    report = await checkImage(overlay, { library, repair: 'all' })
    expect((await allocation(overlay)).allAllocated).toBe(true)
  })

  it('finds data in clusters whose bit is 0 (a lost bitmap update) and reclaims it with -r leaks', async () => {
    await poke(join(dir, 'ov.raw'), 10 * 65536 + 100, pattern(70_000, 5))
    const view = await guestView(overlay)
    let report = await checkImage(overlay, { library })
    const leak = report.problems.find((problem) => problem.code === 'leaked-clusters')
    expect(leak).toMatchObject({ count: 2, severity: 'leak' })
    // Extents are found at filesystem-block granularity: at least the bytes written, within 2 clusters.
    expect(leak!.value).toBeGreaterThanOrEqual(70_000)
    expect(leak!.value).toBeLessThanOrEqual(2 * 65536)
    expect(report.leaks).toBe(2)
    expect(checkExitCode(report)).toBe(3)
    report = await checkImage(overlay, { library, repair: 'leaks' })
    expect(report['leaks-fixed']).toBe(2)
    expect(checkExitCode(report)).toBe(0)
    expect((await guestView(overlay)).equals(view)).toBe(true)
    const image = await readFile(join(dir, 'ov.raw'))
    expect(image.subarray(10 * 65536, 12 * 65536).every((byte) => byte === 0)).toBe(true)
  })

  it('reports a missing base as "could not check" (exit 1)', async () => {
    const { rm } = await import('node:fs/promises')
    await rm(join(dir, 'base.raw'))
    const report = await checkImage(overlay, { library })
    expect(codes(report)).toEqual(['backing-unreachable'])
    expect(checkExitCode(report)).toBe(1)
  })

  it('reports a chain loop (exit 2)', async () => {
    const other = await makeOverlay(library, {
      overlay: join(dir, 'other.add-cow'),
      backing: 'ov.add-cow',
      backingFormat: 'add-cow',
    })
    // rebase refuses to make a loop, so write the looping header directly.
    const error = await rebaseOverlay({
      overlay,
      backing: 'other.add-cow',
      backingFormat: 'add-cow',
      unsafe: true,
      library,
    }).catch((caught: unknown) => caught)
    expect(isEngineError(error, 'CHAIN_LOOP')).toBe(true)
    await rewriteHeader(overlay, {
      ...(await readAddCowHeader(overlay)),
      backingName: 'other.add-cow',
      backingFormat: 'add-cow',
    })
    const report = await checkImage(other, { library, policy: makePolicy({ allowAny: true }) })
    expect(codes(report)).toContain('chain-loop')
    expect(checkExitCode(report)).toBe(2)
  })

  it('reports a changed base (drift), and --accept-base records the new fingerprint', async () => {
    await poke(join(dir, 'base.raw'), 2 * MiB, [1, 2, 3])
    let report = await checkImage(overlay, { library })
    expect(report['base-fingerprint']).toBe('changed')
    expect(report.problems.find((problem) => problem.code === 'base-changed')?.message).toContain(
      join(dir, 'base.raw'),
    )
    expect(checkExitCode(report)).toBe(2)
    report = await checkImage(overlay, { library, acceptBase: true })
    expect(checkExitCode(report)).toBe(0)
    report = await checkImage(overlay, { library })
    expect(report['base-fingerprint']).toBe('unchanged')
  })
})
