// A write inside an unallocated add-cow cluster over a raw base (or none) is a copy-on-write
// fill made by one native job: the base's bytes around the data are read and the whole
// cluster written in one thread-pool job (readBatch with a write target). The portable path
// (batched reads off) reads below and writes itself. Both must leave the same guest view,
// also where the cluster straddles the end of a base shorter than the overlay, and a failed
// job must leave the cluster unallocated (it still reads from the base).
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { isEngineError } from '../../../../../main/engine/errors'
import type { AddCowDisk } from '../../../../../main/engine/formats/add-cow/add-cow-disk'
import { native, setReadBatchEnabled } from '../../../../../main/engine/native/index'
import { openImage } from '../../../../../main/engine/open'
import { createOverlay } from '../../../../../main/engine/ops/create'
import { makeRaw, pattern } from '../../../../helpers/images'
import { seededRandom as random } from '../../../../helpers/numbers'
import { diskTempDir } from '../../../../helpers/tools'

const CLUSTER = 65536
const SIZE = 40 * CLUSTER + 5000
/** The base ends inside cluster 20, so fills there read part base, part zeros. */
const BASE_SIZE = 20 * CLUSTER + 12345

let folder: Awaited<ReturnType<typeof diskTempDir>>
beforeAll(async () => {
  folder = await diskTempDir('addcow-cow-fill-')
})
afterAll(() => folder.cleanup())

/** Small writes strictly inside clusters (head and tail both filled from below). */
function writesInside(seed: number): { offset: number; data: Buffer }[] {
  const next = random(seed)
  const writes: { offset: number; data: Buffer }[] = []
  for (let cluster = 0; cluster < Math.ceil(SIZE / CLUSTER); cluster++) {
    const clusterEnd = Math.min((cluster + 1) * CLUSTER, SIZE)
    const room = clusterEnd - cluster * CLUSTER
    const offset = cluster * CLUSTER + 1 + Math.floor(next() * Math.min(30000, room / 2))
    const length = Math.max(1, Math.min(clusterEnd - offset - 1, Math.floor(next() * 8192) + 1))
    writes.push({ offset, data: pattern(length, seed + cluster, offset) })
  }
  return writes
}

async function overlayWith(name: string, base: 'raw' | 'none'): Promise<string> {
  const dir = join(folder.path, name)
  await mkdir(dir)
  if (base === 'raw') await makeRaw(join(dir, 'base.raw'), BASE_SIZE, 3)
  await createOverlay({
    overlay: join(dir, 'top.add-cow'),
    ...(base === 'raw' ? { backing: 'base.raw' } : {}),
    size: SIZE,
    clusterSize: CLUSTER,
  })
  return dir
}

describe.each(['raw', 'none'] as const)('copy-on-write fills over %s base', (base) => {
  it.each([
    ['the native job', true],
    ['the portable path', false],
  ])('leave the guest view with %s', async (_label, batched) => {
    if (batched && process.env.CI === 'true') expect(native()?.features.readBatchWrite).toBe(true)
    const dir = await overlayWith(`${base}-${batched}`, base)
    const model = Buffer.alloc(SIZE)
    if (base === 'raw') (await readFile(join(dir, 'base.raw'))).copy(model)
    const top = await openImage(join(dir, 'top.add-cow'))
    setReadBatchEnabled(batched)
    try {
      for (const { offset, data } of writesInside(17)) {
        await top.write(offset, data)
        data.copy(model, offset)
      }
    } finally {
      setReadBatchEnabled(true)
    }
    try {
      expect((await top.read(0, SIZE)).equals(model)).toBe(true)
      // Every cluster was filled whole: the image file alone holds the guest view.
      const image = await readFile(join(dir, 'top.raw'))
      expect(image.equals(model)).toBe(true)
    } finally {
      await top.close()
    }
  })
})

describe.runIf(native()?.features.readBatchWrite)('a failed copy-on-write job', () => {
  it('reports the image file and leaves the cluster reading from the base', async () => {
    const dir = await overlayWith('failing', 'raw')
    const top = (await openImage(join(dir, 'top.add-cow'))) as AddCowDisk
    // Close the image file's descriptor under the disk: the job's pwrite fails with EBADF.
    await top.imageFile.close()
    const failure = await top.write(CLUSTER + 100, pattern(4096, 9)).catch((error) => error)
    expect(isEngineError(failure, 'IO_ERROR'), String(failure)).toBe(true)
    expect(String((failure as Error).message)).toContain('top.raw')
    expect(top.isAllocated(1)).toBe(false)
  })
})
