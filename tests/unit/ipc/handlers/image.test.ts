import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import type { MapExtent } from '../../../../shared/image-types'
import type { ResponseOf } from '../../../../shared/ipc/contract'
import { canListDataExtents } from '../../../../main/engine/formats/common/sparse'
import { openImage } from '../../../../main/engine/open'
import { createOverlay } from '../../../../main/engine/ops/create'
import { mapImage } from '../../../../main/engine/ops/map'
import { core, dir, patternFile, TRUSTED, useIpcFolder, valueOf } from '../helpers'

// The image:* channels (main/ipc/handlers/image.ts): the map and allocation on real chains.
// image:get-info and image:get-blast-radius are tested in contract.test.ts and operations.test.ts.

const KIB = 1024
const MIB = 1024 * KIB

async function write(path: string, offset: number, length: number, byte: number): Promise<void> {
  const disk = await openImage(path, { format: 'add-cow' })
  await disk.write(offset, Buffer.alloc(length, byte))
  await disk.flush()
  await disk.close()
}

useIpcFolder('addcow-ipc-queries-')
beforeAll(async () => {
  // base.raw (4 MiB) <- middle.add-cow (writes at 1 MiB) <- top.add-cow (writes at 0 and 3 MiB)
  await patternFile(join(dir, 'base.raw'), 4 * MIB)
  await createOverlay({
    overlay: join(dir, 'middle.add-cow'),
    backing: 'base.raw',
    backingFormat: 'raw',
  })
  await createOverlay({
    overlay: join(dir, 'top.add-cow'),
    backing: 'middle.add-cow',
    backingFormat: 'add-cow',
  })
  await write(join(dir, 'middle.add-cow'), 1 * MIB, 128 * KIB, 0x11)
  await write(join(dir, 'top.add-cow'), 0, 64 * KIB, 0x22)
  await write(join(dir, 'top.add-cow'), 3 * MIB, 64 * KIB, 0x33)
})

describe('image:get-map', () => {
  it('gives the same extents as addcow map, page by page', async () => {
    const top = join(dir, 'top.add-cow')
    const disk = await openImage(top, {})
    const expected = await mapImage(disk)
    await disk.close()
    const whole = valueOf(
      await core.dispatcher.dispatch('image:get-map', { path: top }, TRUSTED),
    ) as ResponseOf<'image:get-map'>
    expect(whole.extents).toEqual(expected)
    expect(whole).toMatchObject({ truncated: false, nextOffset: null, virtualSize: 4 * MIB })
    expect(whole.layers.map((layer) => layer.format)).toEqual(['add-cow', 'add-cow', 'raw'])
    expect(new Set(expected.map((extent) => extent.depth))).toEqual(new Set([0, 1, 2]))

    const pages: MapExtent[] = []
    let offset: number | null = 0
    while (offset !== null) {
      const page = valueOf(
        await core.dispatcher.dispatch('image:get-map', { path: top, offset, limit: 2 }, TRUSTED),
      ) as ResponseOf<'image:get-map'>
      expect(page.extents.length).toBeLessThanOrEqual(2)
      pages.push(...page.extents)
      offset = page.nextOffset
    }
    expect(pages).toEqual(expected)
  })

  it('refuses a range past the end', async () => {
    const result = await core.dispatcher.dispatch(
      'image:get-map',
      { path: join(dir, 'top.add-cow'), offset: 5 * MIB },
      TRUSTED,
    )
    expect(result).toMatchObject({ ok: false, error: { code: 'OUT_OF_RANGE', field: 'offset' } })
  })
})

describe('image:get-allocation', () => {
  it('sums bytes per depth into equal buckets', async () => {
    const result = valueOf(
      await core.dispatcher.dispatch(
        'image:get-allocation',
        { path: join(dir, 'top.add-cow'), buckets: 4 },
        TRUSTED,
      ),
    ) as ResponseOf<'image:get-allocation'>
    // The map opens with this one call: the image's cluster size comes with the sums.
    expect(result.clusterSize).toBe(64 * KIB)
    expect(result.bucketSize).toBe(MIB)
    expect(result.buckets).toEqual([
      { present: [64 * KIB, 0, MIB - 64 * KIB], zero: 0 },
      { present: [0, 128 * KIB, MIB - 128 * KIB], zero: 0 },
      { present: [0, 0, MIB], zero: 0 },
      { present: [64 * KIB, 0, MIB - 64 * KIB], zero: 0 },
    ])
    expect(result.totals).toEqual({
      present: [128 * KIB, 128 * KIB, 4 * MIB - 256 * KIB],
      zero: 0,
      holes: [0, 0, 0],
    })
  })

  it('sums a zoomed range into finer buckets, and refuses a range past the end', async () => {
    const top = join(dir, 'top.add-cow')
    const result = valueOf(
      await core.dispatcher.dispatch(
        'image:get-allocation',
        { path: top, buckets: 4, offset: 3 * MIB, length: 256 * KIB },
        TRUSTED,
      ),
    ) as ResponseOf<'image:get-allocation'>
    expect(result).toMatchObject({ offset: 3 * MIB, length: 256 * KIB, bucketSize: 64 * KIB })
    expect(result.buckets).toEqual([
      { present: [64 * KIB, 0, 0], zero: 0 },
      { present: [0, 0, 64 * KIB], zero: 0 },
      { present: [0, 0, 64 * KIB], zero: 0 },
      { present: [0, 0, 64 * KIB], zero: 0 },
    ])
    expect(result.totals).toEqual({ present: [64 * KIB, 0, 192 * KIB], zero: 0, holes: [0, 0, 0] })
    const whole = valueOf(
      await core.dispatcher.dispatch('image:get-allocation', { path: top, buckets: 2 }, TRUSTED),
    ) as ResponseOf<'image:get-allocation'>
    expect(whole).toMatchObject({ offset: 0, length: 4 * MIB, bucketSize: 2 * MIB })
    // A raw file has no clusters.
    const raw = valueOf(
      await core.dispatcher.dispatch(
        'image:get-allocation',
        { path: join(dir, 'base.raw'), buckets: 2 },
        TRUSTED,
      ),
    ) as ResponseOf<'image:get-allocation'>
    expect(raw).toMatchObject({ clusterSize: null, bucketSize: 2 * MIB })

    const past = await core.dispatcher.dispatch(
      'image:get-allocation',
      { path: top, offset: 3 * MIB, length: 2 * MIB },
      TRUSTED,
    )
    expect(past).toMatchObject({ ok: false, error: { code: 'OUT_OF_RANGE', field: 'length' } })
  })

  it('stays cheap on a 1 TiB image: one pass over the extents, one step per bucket', async () => {
    const big = join(dir, 'big', 'huge.add-cow')
    await mkdir(join(dir, 'big'))
    await createOverlay({ overlay: big, size: 1024 ** 4 })
    // A baseless overlay starts ALL_ALLOCATED: its whole guest view is in this layer, and its
    // image file is one hole that reads as zeros (counted as this layer's holes, not its data).
    const result = valueOf(
      await core.dispatcher.dispatch('image:get-allocation', { path: big, buckets: 256 }, TRUSTED),
    ) as ResponseOf<'image:get-allocation'>
    expect(result.virtualSize).toBe(1024 ** 4)
    expect(result.bucketSize).toBe(4 * 1024 ** 3)
    expect(result.buckets).toHaveLength(256)
    const sum = result.buckets.reduce(
      (total, bucket) => total + bucket.zero + bucket.present.reduce((a, b) => a + b, 0),
      0,
    )
    expect(sum).toBe(1024 ** 4)
    expect(result.totals).toEqual(
      canListDataExtents()
        ? { present: [0], zero: 1024 ** 4, holes: [1024 ** 4] }
        : { present: [1024 ** 4], zero: 0, holes: [0] },
    )
  })

  it('counts a 1 TiB overlay on a small base as mostly unallocated', async () => {
    const base = join(dir, 'big', 'small-base.raw')
    await patternFile(base, 8 * MIB)
    const overlay = join(dir, 'big', 'wide.add-cow')
    await createOverlay({
      overlay,
      backing: 'small-base.raw',
      backingFormat: 'raw',
      size: 1024 ** 4,
    })
    await write(overlay, 512 * 1024 ** 3, 64 * KIB, 0x44)
    const result = valueOf(
      await core.dispatcher.dispatch(
        'image:get-allocation',
        { path: overlay, buckets: 1024 },
        TRUSTED,
      ),
    ) as ResponseOf<'image:get-allocation'>
    expect(result.totals).toEqual({
      present: [64 * KIB, 8 * MIB],
      zero: 1024 ** 4 - 8 * MIB - 64 * KIB,
      holes: [0, 0],
    })
    expect(result.buckets[512]).toEqual({ present: [64 * KIB, 0], zero: 1024 ** 3 - 64 * KIB })
    expect(result.buckets[0]).toEqual({ present: [0, 8 * MIB], zero: 1024 ** 3 - 8 * MIB })
  })
})
