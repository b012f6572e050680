// The job mechanism on its own: the cluster walk (windows, selection, flushes, cancel,
// progress), the one lock rule, and the preamble's capability check.
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { AllocationVisitor, Disk } from '../../../../main/engine/disk'
import { openImage } from '../../../../main/engine/open'
import {
  layerLocks,
  runOverlayJob,
  walkAllocation,
  type AllocationRun,
} from '../../../../main/engine/ops/job'
import { expectEngineError } from '../../../helpers/errors'
import { makeOverlay, libraryIn, makeSparseRaw, pattern, writeGuest } from '../../../helpers/images'
import { tempDir } from '../../../helpers/tools'

const KiB = 1024
const MiB = 1024 * KiB

/** A disk that is only an allocation map: 4 KiB units, allocated where `bits` says. */
function mapDisk(bits: boolean[]): Disk {
  const flushes: number[] = []
  const disk = {
    path: '/map',
    format: 'map',
    size: bits.length * 4 * KiB - 100,
    allocationUnit: 4 * KiB,
    flushes,
    flush: async () => void flushes.push(Date.now()),
    forEachAllocationRun(first: number, end: number, visit: AllocationVisitor) {
      let start = first
      for (let unit = first + 1; unit <= end; unit++) {
        if (unit === end || bits[unit] !== bits[start]) {
          visit(start, unit, bits[start]!)
          start = unit
        }
      }
    },
  }
  return disk as unknown as Disk
}

describe('walkAllocation', () => {
  const bits = Array.from({ length: 40 }, (_, unit) => unit % 7 < 3 || unit >= 37)

  it('hands each window its selected runs, clamped to the disk, with progress in bytes', async () => {
    const disk = mapDisk(bits)
    const seen: AllocationRun[] = []
    const progress: [number, number][] = []
    const result = await walkAllocation(
      disk,
      {
        operation: 'test',
        select: 'allocated',
        windowBytes: 16 * KiB,
        onProgress: (done, total) => progress.push([done, total]),
      },
      async (runs) => void seen.push(...runs),
    )
    const expected = bits.flatMap((allocated, unit) => (allocated ? [unit] : []))
    expect(
      seen.flatMap((run) => Array.from({ length: run.stop - run.first }, (_, i) => run.first + i)),
    ).toEqual(expected)
    // No run crosses a window of 4 units, and the last one ends at the disk's size.
    for (const run of seen) expect(Math.floor(run.first / 4)).toBe(Math.floor((run.stop - 1) / 4))
    expect(seen.at(-1)!.end).toBe(disk.size)
    const total = expected.length * 4 * KiB - 100
    expect(result).toEqual({ units: expected.length, bytes: total })
    expect(progress.at(-1)).toEqual([total, total])
    expect(progress.every(([done], index) => index === 0 || done > progress[index - 1]![0])).toBe(
      true,
    )
  })

  it('selects the unallocated runs, flushes every so many written bytes and before a cancel', async () => {
    const disk = mapDisk(bits) as Disk & { flushes: number[] }
    const controller = new AbortController()
    let windows = 0
    await expectEngineError(
      walkAllocation(
        disk,
        {
          operation: 'test',
          select: 'unallocated',
          windowBytes: 8 * KiB,
          signal: controller.signal,
          flush: { every: 12 * KiB, flush: () => disk.flush() },
        },
        async (runs) => {
          expect(runs.every((run) => !bits[run.first])).toBe(true)
          if (++windows === 5) controller.abort()
          return runs.reduce((sum, run) => sum + run.end - run.start, 0)
        },
      ),
      'ABORTED',
    )
    expect(windows).toBe(5)
    // Windows of 2 units write 4, 8, 4, 8 and 8 KiB: a flush after the 2nd and the 4th (12 KiB
    // each), then one before the cancel is reported.
    expect(disk.flushes.length).toBe(3)
  })
})

describe('the job preamble and the lock rule', () => {
  let dir: string
  let cleanup: () => Promise<void>
  beforeEach(async () => {
    ;({ path: dir, cleanup } = await tempDir('addcow-job-'))
  })
  afterEach(() => cleanup())

  it('locks the files of every layer: those it writes exclusively, the rest shared', async () => {
    await makeSparseRaw(join(dir, 'base.raw'), MiB, [[0, pattern(4096, 1)]])
    const library = libraryIn(dir)
    const mid = await makeOverlay(library, {
      overlay: join(dir, 'mid.add-cow'),
      backing: 'base.raw',
      backingFormat: 'raw',
    })
    const top = await makeOverlay(library, {
      overlay: join(dir, 'top.add-cow'),
      backing: 'mid.add-cow',
      backingFormat: 'add-cow',
    })
    const disk = await openImage(top, { readOnly: true })
    try {
      const layers = [disk, disk.backing!, disk.backing!.backing!]
      expect(await layerLocks(layers, (layer) => layer === layers[1])).toEqual([
        { path: top, mode: 'shared' },
        { path: join(dir, 'top.raw'), mode: 'shared' },
        { path: mid, mode: 'exclusive' },
        { path: join(dir, 'mid.raw'), mode: 'exclusive' },
        { path: join(dir, 'base.raw'), mode: 'shared' },
      ])
    } finally {
      await disk.close()
    }
  })

  it('refuses an image whose format lacks an ability, naming it, and closes what it opened', async () => {
    await makeSparseRaw(join(dir, 'plain.raw'), MiB)
    const error = await expectEngineError(
      runOverlayJob(
        'stream',
        { path: join(dir, 'plain.raw'), needs: ['dataFile', 'markAllocated'] },
        async () => 'ran',
      ),
      'NOT_CAPABLE',
    )
    expect(error.message).toMatch(
      /plain\.raw is a raw image, which cannot mark clusters as its own; stream works on images that can/,
    )
    // The preamble closed the disk: the file can be opened for writing and locked again.
    await writeGuest(join(dir, 'plain.raw'), [[0, pattern(10, 2)]])
  })
})
