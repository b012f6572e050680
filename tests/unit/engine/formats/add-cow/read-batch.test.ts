// The add-cow read path has three implementations: batched preads through the native addon,
// first from the page cache on the calling thread (readCached) with the rest and half of big
// reads on the thread pool (the default); the same batches all on the thread pool (readCached
// off); and the portable one (one read per run). All must return the guest view exactly: over
// a raw base (batched), over an add-cow base (read through the base's own disk), with a base
// shorter than the overlay (zeros past its end) and without a base, at random offsets and
// lengths.
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Disk } from '../../../../../main/engine/disk'
import {
  native,
  setReadBatchEnabled,
  setReadCachedEnabled,
} from '../../../../../main/engine/native/index'
import { openImage } from '../../../../../main/engine/open'
import { createOverlay } from '../../../../../main/engine/ops/create'
import { diskTempDir } from '../../../../helpers/tools'
import { makeRaw, pattern } from '../../../../helpers/images'
import { seededRandom as random } from '../../../../helpers/numbers'

const MIB = 1024 * 1024

/** Write random clusters through the disk, mirroring them in `model`. */
async function scatter(
  disk: Disk,
  model: Buffer,
  seed: number,
  clusterSize: number,
): Promise<void> {
  const next = random(seed)
  const clusters = Math.ceil(disk.size / clusterSize)
  for (let i = 0; i < clusters; i++) {
    if (next() < 0.5) continue
    const start = i * clusterSize + Math.floor(next() * 512)
    const length = Math.min(disk.size - start, Math.floor(next() * clusterSize) + 1)
    if (length <= 0) continue
    const data = pattern(length, seed + i, start)
    await disk.write(start, data)
    data.copy(model, start)
  }
}

async function readAll(disk: Disk, seed: number): Promise<Buffer[]> {
  const next = random(seed)
  const reads: Buffer[] = [await disk.read(0, disk.size)]
  for (let i = 0; i < 40; i++) {
    const offset = Math.floor(next() * disk.size)
    const length = Math.min(disk.size - offset, Math.floor(next() * 3 * MIB))
    reads.push(await disk.read(offset, length))
  }
  return reads
}

const addon = native()

describe.each([4096, 65536])(
  'add-cow reads, batched and portable, %i-byte clusters',
  (clusterSize) => {
    let folder: Awaited<ReturnType<typeof diskTempDir>>

    beforeAll(async () => {
      folder = await diskTempDir()
    })
    afterAll(async () => {
      await folder.cleanup()
    })

    it.each([
      ['a raw base shorter than the overlay', 'raw'],
      ['an add-cow base', 'add-cow'],
      ['no base', 'none'],
    ])('returns the guest view over %s', async (_label, kind) => {
      if (process.env.CI === 'true') {
        expect(addon?.readBatch).toBeTypeOf('function')
        expect(addon?.readCached).toBeTypeOf('function')
      }
      const dir = join(folder.path, `${kind}-${clusterSize}`)
      await import('node:fs/promises').then((fs) => fs.mkdir(dir))
      const size = 6 * MIB + 12345
      const model = Buffer.alloc(size)
      let backing: string | undefined
      if (kind === 'raw') {
        const base = await makeRaw(join(dir, 'base.raw'), 4 * MIB + 777, 3)
        base.copy(model)
        backing = 'base.raw'
      } else if (kind === 'add-cow') {
        const base = await makeRaw(join(dir, 'bottom.raw'), size, 5)
        await createOverlay({
          overlay: join(dir, 'mid.add-cow'),
          backing: 'bottom.raw',
          clusterSize,
        })
        const middle = await openImage(join(dir, 'mid.add-cow'))
        base.copy(model)
        await scatter(middle, model, 11, clusterSize)
        await middle.close()
        backing = 'mid.add-cow'
      }
      await createOverlay({
        overlay: join(dir, 'top.add-cow'),
        ...(backing ? { backing } : {}),
        size,
        clusterSize,
      })
      const top = await openImage(join(dir, 'top.add-cow'))
      try {
        await scatter(top, model, 29, clusterSize)
        const batched = await readAll(top, 7)
        setReadCachedEnabled(false)
        let pooled: Buffer[]
        let portable: Buffer[]
        try {
          pooled = await readAll(top, 7)
          setReadBatchEnabled(false)
          portable = await readAll(top, 7)
        } finally {
          setReadCachedEnabled(true)
          setReadBatchEnabled(true)
        }
        const next = random(7)
        expect(batched[0]!.equals(model)).toBe(true)
        expect(pooled[0]!.equals(model)).toBe(true)
        expect(portable[0]!.equals(model)).toBe(true)
        for (let i = 1; i < batched.length; i++) {
          const offset = Math.floor(next() * size)
          const length = Math.min(size - offset, Math.floor(next() * 3 * MIB))
          const expected = model.subarray(offset, offset + length)
          expect(batched[i]!.equals(expected), `batched read ${i} at ${offset}+${length}`).toBe(
            true,
          )
          expect(pooled[i]!.equals(expected), `thread-pool read ${i} at ${offset}+${length}`).toBe(
            true,
          )
          expect(portable[i]!.equals(expected), `portable read ${i} at ${offset}+${length}`).toBe(
            true,
          )
        }
      } finally {
        await top.close()
      }
    })
  },
)
