import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Library } from '../../../../main/engine/library'
import { openImage } from '../../../../main/engine/open'
import { sumAllocation } from '../../../../main/engine/ops/map'
import { addcow } from '../../../helpers/cli'
import { requireTools, tempDir, tool } from '../../../helpers/tools'

// Holes in a base read as zeros and are shown and counted as such, as `qemu-img map` reports
// them: a sparse raw base (made and written by QEMU), an add-cow overlay on it and a qcow2 twin
// with the same writes. Our map must give the same zero and data ranges as qemu-img map, and
// the app's allocation sums must count as data only what qemu-img map calls data.

const ready = requireTools('qemu-img', 'qemu-io')
const MIB = 1024 * 1024
const SIZE = 256 * MIB

interface MapEntry {
  start: number
  length: number
  depth: number
  present: boolean
  zero: boolean
  data: boolean
}

/** Adjacent alike entries merged, keys in one order (qemu-img splits at host offsets). */
function normalise(entries: MapEntry[]): MapEntry[] {
  const merged: MapEntry[] = []
  for (const { start, length, depth, present, zero, data } of entries) {
    const last = merged[merged.length - 1]
    if (
      last &&
      last.start + last.length === start &&
      last.depth === depth &&
      last.present === present &&
      last.zero === zero &&
      last.data === data
    ) {
      last.length += length
    } else {
      merged.push({ start, length, depth, present, zero, data })
    }
  }
  return merged
}

/** Bytes of the entries that match. */
function bytes(entries: MapEntry[], match: (entry: MapEntry) => boolean): number {
  return entries.filter(match).reduce((sum, entry) => sum + entry.length, 0)
}

let dir: string
let data: string
let cleanup: () => Promise<void>

beforeAll(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-map-holes-'))
  data = join(dir, 'library')
})

afterAll(async () => {
  await cleanup()
})

async function qemuMap(file: string, format: string): Promise<MapEntry[]> {
  return JSON.parse(
    await tool('qemu-img', ['map', '--output=json', '-f', format, join(dir, file)]),
  ) as MapEntry[]
}

async function ourMap(file: string): Promise<MapEntry[]> {
  const result = await addcow(['map', '--json', file], { cwd: dir, dataDir: data })
  expect(result.code, result.stderr).toBe(0)
  return JSON.parse(result.stdout) as MapEntry[]
}

describe.runIf(ready)('map of a sparse base against qemu-img map', () => {
  beforeAll(async () => {
    // The base: 256 MiB, data in three places, holes everywhere else.
    await tool('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'base.raw'), '256M'])
    await tool('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0xa1 1M 1M',
      '-c',
      'write -P 0xa2 100M 3M',
      '-c',
      'write -P 0xa3 250M 64k',
      join(dir, 'base.raw'),
    ])
    const writes = ['write -P 0x31 0 64k', 'write -P 0x32 101M 128k', 'write -P 0x33 180M 1M']
    const created = await addcow(['create', '-b', 'base.raw', '-F', 'raw', 'vm.add-cow'], {
      cwd: dir,
      dataDir: data,
    })
    expect(created.code, created.stderr).toBe(0)
    const disk = await openImage(join(dir, 'vm.add-cow'), { readOnly: false })
    try {
      await disk.write(0, Buffer.alloc(64 * 1024, 0x31))
      await disk.write(101 * MIB, Buffer.alloc(128 * 1024, 0x32))
      await disk.write(180 * MIB, Buffer.alloc(MIB, 0x33))
    } finally {
      await disk.close()
    }
    await tool('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      'cluster_size=65536',
      '-b',
      'base.raw',
      '-F',
      'raw',
      join(dir, 'twin.qcow2'),
    ])
    await tool('qemu-io', [
      '-f',
      'qcow2',
      ...writes.flatMap((w) => ['-c', w]),
      join(dir, 'twin.qcow2'),
    ])
  })

  it('gives the zero and data ranges of the sparse raw base that qemu-img map gives', async () => {
    const theirs = normalise(await qemuMap('base.raw', 'raw'))
    const ours = normalise(await ourMap('base.raw'))
    expect(ours).toEqual(theirs)
    // The holes are there, as zeros and not data, on both sides.
    expect(bytes(ours, (entry) => entry.zero && !entry.data)).toBeGreaterThan(200 * MIB)
  })

  it("gives the overlay the ranges of qemu-img map's qcow2 twin: the base's holes are zeros at depth 1", async () => {
    const theirs = normalise(await qemuMap('twin.qcow2', 'qcow2'))
    const ours = normalise(await ourMap('vm.add-cow'))
    expect(ours).toEqual(theirs)
    expect(
      ours.some((entry) => entry.depth === 1 && entry.present && entry.zero && !entry.data),
    ).toBe(true)
  })

  it("counts as the base's data in the app's sums only what qemu-img map calls data", async () => {
    const theirs = await qemuMap('twin.qcow2', 'qcow2')
    const disk = await openImage(join(dir, 'vm.add-cow'), {
      readOnly: true,
      policy: await new Library(join(data, 'library.json')).policy(),
    })
    try {
      const sums = await sumAllocation(disk, 2, 64)
      expect(sums.totals.present).toEqual([
        bytes(theirs, (entry) => entry.depth === 0 && entry.data),
        bytes(theirs, (entry) => entry.depth === 1 && entry.data),
      ])
      expect(sums.totals.zero).toBe(bytes(theirs, (entry) => !entry.data))
      expect(sums.totals.holes).toEqual([
        0,
        bytes(theirs, (entry) => entry.depth === 1 && entry.present && !entry.data),
      ])
      // Far from the 1024-times-too-much of counting holes as data: a few MiB of 256.
      expect(sums.totals.present[1]).toBeLessThan(8 * MIB)
      expect(sums.totals.present[0]! + sums.totals.present[1]! + sums.totals.zero).toBe(SIZE)
    } finally {
      await disk.close()
    }
  })
})
