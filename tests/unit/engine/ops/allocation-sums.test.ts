import fc from 'fast-check'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Disk } from '../../../../main/engine/disk'
import { canListDataExtents } from '../../../../main/engine/formats/common/sparse'
import { openImage } from '../../../../main/engine/open'
import { createOverlay } from '../../../../main/engine/ops/create'
import {
  mapImage,
  nextWrittenRange,
  sumAllocation,
  type AllocationSums,
} from '../../../../main/engine/ops/map'
import { makeSparseRaw, writeGuest } from '../../../helpers/images'
import { tempDir } from '../../../helpers/tools'

// The map's sums (sumAllocation) and its "next written range" against the plain extent walk
// (mapImage, what `addcow map --json` prints): whatever the bins, the range and the chain, the
// sums are the extents' bytes added up, holes of a sparse base count as zeros, and the next
// written range is the first depth-0 data extent.

const KIB = 1024
const MIB = 1024 * KIB
const CLUSTER = 64 * KIB
const SIZE = 64 * MIB

let dir: string
let cleanup: () => Promise<void>
let top: Disk
let middle: Disk
let base: Disk

/** The base's data: [offset, length] pieces; holes everywhere else. */
const BASE_DATA: [number, number][] = [
  [0, MIB],
  [9 * MIB, 3 * MIB],
  [40 * MIB, 64 * KIB],
]

beforeAll(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-sums-'))
  await makeSparseRaw(
    join(dir, 'base.raw'),
    SIZE,
    BASE_DATA.map(([offset, length]) => [offset, Buffer.alloc(length, 0x11)]),
  )
  await createOverlay({
    overlay: join(dir, 'middle.add-cow'),
    backing: 'base.raw',
    backingFormat: 'raw',
    clusterSize: CLUSTER,
  })
  await createOverlay({
    overlay: join(dir, 'top.add-cow'),
    backing: 'middle.add-cow',
    backingFormat: 'add-cow',
    clusterSize: CLUSTER,
    size: SIZE + 5 * MIB, // past the base's end: unallocated there reads as absent zeros
  })
  await writeGuest(join(dir, 'middle.add-cow'), [
    [10 * MIB, Buffer.alloc(2 * MIB, 0x22)],
    [30 * MIB + 100, Buffer.alloc(300, 0x22)],
  ])
  await writeGuest(join(dir, 'top.add-cow'), [
    [0, Buffer.alloc(CLUSTER, 0x33)],
    [10 * MIB + CLUSTER, Buffer.alloc(CLUSTER, 0x33)],
    [33 * MIB, Buffer.alloc(8 * MIB, 0x33)],
    [SIZE + MIB, Buffer.alloc(CLUSTER, 0x33)],
  ])
  top = await openImage(join(dir, 'top.add-cow'), { readOnly: true })
  middle = await openImage(join(dir, 'middle.add-cow'), { readOnly: true })
  base = await openImage(join(dir, 'base.raw'), { readOnly: true, format: 'raw' })
})

afterAll(async () => {
  for (const disk of [top, middle, base]) await disk?.close()
  await cleanup()
})

/** The sums the slow way: every extent of the map, added into the bins it covers. */
async function naiveSums(
  disk: Disk,
  depths: number,
  binCount: number,
  offset: number,
  length: number,
): Promise<AllocationSums> {
  const binSize = length === 0 ? 0 : Math.ceil(length / binCount)
  const count = length === 0 ? 0 : Math.ceil(length / binSize)
  const bins = Array.from({ length: count }, () => ({
    present: new Array<number>(depths).fill(0),
    zero: 0,
  }))
  const totals = {
    present: new Array<number>(depths).fill(0),
    zero: 0,
    holes: new Array<number>(depths).fill(0),
  }
  for (const extent of await mapImage(disk)) {
    for (
      let byte = Math.max(extent.start, offset);
      byte < Math.min(extent.start + extent.length, offset + length);
    ) {
      const index = Math.floor((byte - offset) / binSize)
      const stop = Math.min(
        extent.start + extent.length,
        offset + length,
        offset + (index + 1) * binSize,
      )
      if (extent.data) {
        bins[index]!.present[extent.depth]! += stop - byte
        totals.present[extent.depth]! += stop - byte
      } else {
        bins[index]!.zero += stop - byte
        totals.zero += stop - byte
        if (extent.present) totals.holes[extent.depth]! += stop - byte
      }
      byte = stop
    }
  }
  return { binSize, bins, totals }
}

describe('sumAllocation', () => {
  it('adds up exactly what the map walk reports, for any bins and range of a three-layer chain', async () => {
    const size = top.size
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 300 }),
        fc.nat(size),
        fc.nat(size),
        async (binCount, a, b) => {
          const offset = Math.min(a, b)
          const length = Math.max(a, b) - offset
          const ours = await sumAllocation(top, 3, binCount, offset, length)
          expect(ours).toEqual(await naiveSums(top, 3, binCount, offset, length))
        },
      ),
      { numRuns: 40 },
    )
  })

  it.skipIf(!canListDataExtents())(
    "counts a sparse base's holes as zeros, not as the base's data (as qemu-img map: zero, not data)",
    async () => {
      const sums = await sumAllocation(middle, 2, 64)
      const baseData = BASE_DATA.reduce((sum, [, length]) => sum + length, 0)
      // The middle layer's own clusters: 2 MiB at 10 MiB (inside the base's data) and one
      // cluster around 30 MiB (over a hole).
      const own = 2 * MIB + CLUSTER
      expect(sums.totals.present).toEqual([own, baseData - 2 * MIB])
      expect(sums.totals.holes).toEqual([0, SIZE - own - (baseData - 2 * MIB)])
      expect(sums.totals.zero).toBe(SIZE - own - (baseData - 2 * MIB))
      // The base alone: its data, and the rest holes that read as zeros.
      const alone = await sumAllocation(base, 1, 1)
      expect(alone.totals).toEqual({
        present: [baseData],
        zero: SIZE - baseData,
        holes: [SIZE - baseData],
      })
    },
  )

  it('refuses a range past the end of the disk', async () => {
    await expect(sumAllocation(top, 3, 4, top.size - MIB, 2 * MIB)).rejects.toMatchObject({
      code: 'OUT_OF_RANGE',
    })
  })
})

describe('nextWrittenRange', () => {
  it("finds each run of the image's own clusters in turn, then null", async () => {
    const runs: [number, number][] = []
    let offset = 0
    for (;;) {
      const run = await nextWrittenRange(top, offset)
      if (!run) break
      runs.push(run)
      offset = run[1]
    }
    expect(runs).toEqual([
      [0, CLUSTER],
      [10 * MIB + CLUSTER, 10 * MIB + 2 * CLUSTER],
      [33 * MIB, 41 * MIB],
      [SIZE + MIB, SIZE + MIB + CLUSTER],
    ])
    expect(await nextWrittenRange(top, 33 * MIB + 5)).toEqual([33 * MIB + 5, 41 * MIB])
    expect(await nextWrittenRange(top, top.size)).toBeNull()
  })

  it.skipIf(!canListDataExtents())(
    "finds a raw file's data extents (a layer without an allocation summary)",
    async () => {
      expect(await nextWrittenRange(base, MIB)).toEqual([9 * MIB, 12 * MIB])
      expect(await nextWrittenRange(base, 41 * MIB)).toBeNull()
    },
  )
})
