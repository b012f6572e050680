import { readFile, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { Disk } from '../../../../../main/engine/disk'
import { setFileObserver, type FileEvent } from '../../../../../main/engine/file'
import { AddCowDisk } from '../../../../../main/engine/formats/add-cow/add-cow-disk'
import { BITMAP_CHUNK } from '../../../../../main/engine/formats/common/bitmap'
import { canListDataExtents } from '../../../../../main/engine/formats/common/sparse'
import { openImage } from '../../../../../main/engine/open'
import { createOverlay } from '../../../../../main/engine/ops/create'
import { tempDir } from '../../../../helpers/tools'
import {
  CLUSTER_SIZES,
  makeRaw,
  makeSparse,
  patchFile,
  pattern,
  readFileRange,
  u64le,
} from '../../../../helpers/images'
import { expectEngineError } from '../../../../helpers/errors'

interface Fixture {
  folder: string
  overlay: string
  image: string
  base: string
  clusterSize: number
  size: number
  baseSize: number
  /** The guest view as it should be. */
  model: Buffer
  disk: AddCowDisk
}

let cleanup: (() => Promise<void>) | null = null
let opened: Disk[] = []

afterEach(async () => {
  setFileObserver(null)
  for (const disk of opened) await disk.close().catch(() => undefined)
  opened = []
  await cleanup?.()
  cleanup = null
})

async function openOverlay(path: string, readOnly = false): Promise<AddCowDisk> {
  const disk = await openImage(path, { readOnly })
  opened.push(disk)
  expect(disk).toBeInstanceOf(AddCowDisk)
  return disk as AddCowDisk
}

/**
 * A base of 3.5 clusters and an overlay of 5.25 clusters over it (larger than the base, with a
 * partial last cluster).
 */
async function setup(
  clusterSize: number,
  sizes: { base?: number; size?: number } = {},
): Promise<Fixture> {
  const folder = await tempDir()
  cleanup = folder.cleanup
  const baseSize = sizes.base ?? 3 * clusterSize + clusterSize / 2
  const size = sizes.size ?? 5 * clusterSize + clusterSize / 4
  const base = join(folder.path, 'base.raw')
  const baseData = await makeRaw(base, baseSize, 1)
  const overlay = join(folder.path, 'overlay.add-cow')
  await createOverlay({ overlay, backing: 'base.raw', size, clusterSize })
  const model = Buffer.alloc(size)
  baseData.copy(model, 0, 0, Math.min(baseSize, size))
  return {
    folder: folder.path,
    overlay,
    image: join(folder.path, 'overlay.raw'),
    base,
    clusterSize,
    size,
    baseSize,
    model,
    disk: await openOverlay(overlay),
  }
}

async function expectGuestView(disk: Disk, model: Uint8Array): Promise<void> {
  expect(disk.size).toBe(model.length)
  const data = await disk.read(0, disk.size)
  expect(data.equals(model), 'guest view differs from the model').toBe(true)
}

async function write(fixture: Fixture, offset: number, data: Buffer): Promise<void> {
  await fixture.disk.write(offset, data)
  data.copy(fixture.model, offset)
}

async function bitmapByte(fixture: Fixture, index: number): Promise<number> {
  const header = Math.max(4096, fixture.clusterSize)
  return (await readFileRange(fixture.overlay, header + index, 1))[0]!
}

describe.each(CLUSTER_SIZES)('add-cow read and write at %i-byte clusters', (clusterSize) => {
  const C = clusterSize

  it('reads the base, then zeros past its end, when nothing is written', async () => {
    const fixture = await setup(C)
    await expectGuestView(fixture.disk, fixture.model)
    expect(fixture.disk.allocatedClusters).toBe(0)
    expect(fixture.disk.geometry.clusters).toBe(6)
    // Reads of every alignment agree with the model.
    for (const [offset, length] of [
      [0, 1],
      [C - 1, 2],
      [3 * C + C / 2 - 3, 7],
      [fixture.size - 1, 1],
      [fixture.size, 0],
    ] as const) {
      expect(
        (await fixture.disk.read(offset, length)).equals(
          fixture.model.subarray(offset, offset + length),
        ),
      ).toBe(true)
    }
  })

  it('writes whole clusters to the image file at the guest offset', async () => {
    const fixture = await setup(C)
    const data = pattern(C, 9)
    await write(fixture, C, data)
    await expectGuestView(fixture.disk, fixture.model)
    expect(fixture.disk.isAllocated(1)).toBe(true)
    expect(fixture.disk.isAllocated(0)).toBe(false)
    expect((await readFileRange(fixture.image, C, C)).equals(data)).toBe(true)
    // Nothing else reached the image file, and its length (the virtual size) did not change.
    expect((await readFileRange(fixture.image, 0, C)).every((byte) => byte === 0)).toBe(true)
    expect((await stat(fixture.image)).size).toBe(fixture.size)
    await fixture.disk.flush()
    expect(await bitmapByte(fixture, 0)).toBe(0b10)
  })

  it('fills the rest of a partly written cluster from the base', async () => {
    const fixture = await setup(C)
    await write(fixture, 100, pattern(200, 2))
    await expectGuestView(fixture.disk, fixture.model)
    expect((await readFileRange(fixture.image, 0, C)).equals(fixture.model.subarray(0, C))).toBe(
      true,
    )
    // A second partial write to the now-allocated cluster does not fill again.
    await write(fixture, C - 10, pattern(10, 3))
    await expectGuestView(fixture.disk, fixture.model)
  })

  it('handles a write spanning clusters with partial head and tail', async () => {
    const fixture = await setup(C)
    await write(fixture, C / 2 + 3, pattern(C + C / 2 + C / 3, 4))
    await expectGuestView(fixture.disk, fixture.model)
    expect([0, 1, 2, 3].map((cluster) => fixture.disk.isAllocated(cluster))).toEqual([
      true,
      true,
      true,
      false,
    ])
    expect(
      (await readFileRange(fixture.image, 0, 3 * C)).equals(fixture.model.subarray(0, 3 * C)),
    ).toBe(true)
  })

  it('fills with zeros past the end of the base', async () => {
    const fixture = await setup(C)
    // Cluster 3 straddles the base's end (3.5 clusters); cluster 4 lies wholly past it.
    await write(fixture, 3 * C + 5, pattern(3, 5))
    await write(fixture, 4 * C + C / 2, pattern(7, 6))
    await expectGuestView(fixture.disk, fixture.model)
    const image = await readFileRange(fixture.image, 3 * C, 2 * C)
    expect(image.equals(fixture.model.subarray(3 * C, 5 * C))).toBe(true)
    expect(image.subarray(C / 2, C / 2 + 5).every((byte) => byte === 0)).toBe(true)
  })

  it('clamps the fill of the last, partial cluster at the virtual size', async () => {
    const fixture = await setup(C)
    await write(fixture, 5 * C + 10, pattern(20, 7))
    await write(fixture, fixture.size - 1, pattern(1, 8))
    await expectGuestView(fixture.disk, fixture.model)
    expect((await stat(fixture.image)).size).toBe(fixture.size)
    await fixture.disk.close()
    expect((await stat(fixture.image)).size).toBe(fixture.size)
  })

  it('serves an image smaller than the base', async () => {
    const fixture = await setup(C, { base: 4 * C, size: 2 * C + 1 })
    await expectGuestView(fixture.disk, fixture.model)
    await write(fixture, 2 * C - 1, pattern(2, 10))
    await expectGuestView(fixture.disk, fixture.model)
    expect(fixture.disk.geometry.clusters).toBe(3)
  })

  it('writes zeroes, allocating only where the layers below are not zero', async () => {
    const fixture = await setup(C)
    const zero = async (offset: number, length: number) => {
      await fixture.disk.writeZeroes(offset, length)
      fixture.model.fill(0, offset, offset + length)
    }
    await zero(C + 7, 9) // partial, over base data
    await zero(2 * C, C) // whole cluster over base data
    await zero(4 * C, C) // whole cluster past the base's end: reads as zeros already
    await zero(fixture.size - 3, 3) // partial last cluster past the base
    await expectGuestView(fixture.disk, fixture.model)
    expect([1, 2, 4, 5].map((cluster) => fixture.disk.isAllocated(cluster))).toEqual([
      true,
      true,
      false,
      true,
    ])
    await zero(0, fixture.size)
    await expectGuestView(fixture.disk, fixture.model)
    await fixture.disk.writeZeroes(0, 0)
  })

  it('reports where each range comes from', async () => {
    const fixture = await setup(C)
    const half = C / 2
    expect(await fixture.disk.blockStatus(0, fixture.size)).toEqual([
      { offset: 0, length: 3 * C + half, depth: 1, present: true, zero: false },
      {
        offset: 3 * C + half,
        length: fixture.size - 3 * C - half,
        depth: 0,
        present: false,
        zero: true,
      },
    ])
    await fixture.disk.write(C + 1, Buffer.from([1]))
    await fixture.disk.write(4 * C, Buffer.from([1]))
    expect(await fixture.disk.blockStatus(half, fixture.size - half)).toEqual([
      { offset: half, length: C - half, depth: 1, present: true, zero: false },
      { offset: C, length: C, depth: 0, present: true, zero: false },
      { offset: 2 * C, length: C + half, depth: 1, present: true, zero: false },
      { offset: 3 * C + half, length: half, depth: 0, present: false, zero: true },
      { offset: 4 * C, length: C, depth: 0, present: true, zero: false },
      { offset: 5 * C, length: fixture.size - 5 * C, depth: 0, present: false, zero: true },
    ])
    expect(await fixture.disk.blockStatus(3, 0)).toEqual([])
  })

  it('sets ALL_ALLOCATED when the last unallocated cluster is written, and keeps unknown bits', async () => {
    const fixture = await setup(C)
    await fixture.disk.close()
    await patchFile(fixture.overlay, 32, u64le(0x40n))
    fixture.disk = await openOverlay(fixture.overlay)
    for (const cluster of [5, 0, 1, 2, 4])
      await write(fixture, cluster * C + 1, pattern(2, cluster))
    expect(fixture.disk.allAllocated).toBe(false)
    await write(fixture, 3 * C, pattern(C, 11))
    expect(fixture.disk.allAllocated).toBe(true)
    // Not durable before a flush; durable after it, next to the unknown bit.
    expect((await readFileRange(fixture.overlay, 32, 8)).readBigUInt64LE()).toBe(0x40n)
    await fixture.disk.flush()
    expect((await readFileRange(fixture.overlay, 32, 8)).readBigUInt64LE()).toBe(0x41n)
    expect(await bitmapByte(fixture, 0)).toBe(0x3f)
    await write(fixture, 2, pattern(5, 12))
    await fixture.disk.close()
    const reopened = await openOverlay(fixture.overlay)
    expect(reopened.allAllocated).toBe(true)
    await expectGuestView(reopened, fixture.model)
  })

  it('honours ALL_ALLOCATED: neither the bitmap nor the backing file is consulted', async () => {
    const fixture = await setup(C)
    await fixture.disk.close()
    await patchFile(fixture.overlay, 32, u64le(1n))
    await rm(fixture.base)
    const disk = await openOverlay(fixture.overlay)
    expect(disk.allAllocated).toBe(true)
    expect(disk.backing).toBeNull()
    expect((await disk.read(0, disk.size)).every((byte) => byte === 0)).toBe(true)
    await disk.write(7, pattern(C, 13))
    expect((await readFileRange(fixture.image, 7, C)).equals(pattern(C, 13))).toBe(true)
    // The image file is the whole guest view: what the write put there is data, and its holes
    // read as zeros and say so, as a raw file's do (without SEEK_DATA: all data).
    const status = await disk.blockStatus(0, disk.size)
    if (!canListDataExtents()) {
      expect(status).toEqual([
        { offset: 0, length: disk.size, depth: 0, present: true, zero: false },
      ])
      return
    }
    const [data, hole, ...rest] = status
    expect(data).toMatchObject({ offset: 0, depth: 0, present: true, zero: false })
    expect(data!.length).toBeGreaterThanOrEqual(7 + C)
    expect(hole).toEqual({
      offset: data!.length,
      length: disk.size - data!.length,
      depth: 0,
      present: true,
      zero: true,
    })
    expect(rest).toEqual([])
  })

  it('keeps everything across close and reopen', async () => {
    const fixture = await setup(C)
    await write(fixture, Math.floor(C / 3), pattern(2 * C, 14))
    await write(fixture, fixture.size - C, pattern(C, 15))
    await fixture.disk.close()
    const reopened = await openOverlay(fixture.overlay)
    await expectGuestView(reopened, fixture.model)
    expect(reopened.allocatedClusters).toBe(fixture.disk.allocatedClusters)
  })

  it('refuses requests outside the disk, without allocating for them', async () => {
    const fixture = await setup(C)
    const { disk, size } = fixture
    await expectEngineError(disk.read(size, 1), 'OUT_OF_RANGE')
    await expectEngineError(disk.read(-1, 1), 'OUT_OF_RANGE')
    await expectEngineError(disk.read(0, -1), 'OUT_OF_RANGE')
    await expectEngineError(disk.read(0, 2 ** 52), 'OUT_OF_RANGE')
    await expectEngineError(disk.read(Number.NaN, 1), 'OUT_OF_RANGE')
    await expectEngineError(disk.readInto(Buffer.alloc(2), size - 1), 'OUT_OF_RANGE')
    const error = await expectEngineError(disk.write(size - 1, Buffer.alloc(2)), 'OUT_OF_RANGE')
    expect(error.path).toBe(fixture.overlay)
    await expectEngineError(disk.writeZeroes(0.5, 1), 'OUT_OF_RANGE')
    await expectEngineError(disk.blockStatus(0, size + 1), 'OUT_OF_RANGE')
    await expectEngineError(disk.discard(size, 1), 'OUT_OF_RANGE')
  })

  it('refuses writes when read-only and everything once closed', async () => {
    const fixture = await setup(C)
    await fixture.disk.close()
    const readOnly = await openOverlay(fixture.overlay, true)
    expect(readOnly.readOnly).toBe(true)
    expect(readOnly.capabilities.write).toBe(false)
    await expectEngineError(readOnly.write(0, Buffer.alloc(1)), 'READ_ONLY')
    await expectEngineError(readOnly.writeZeroes(0, 1), 'READ_ONLY')
    await readOnly.flush()
    await readOnly.close()
    await readOnly.close()
    await expectEngineError(readOnly.read(0, 1), 'BAD_REQUEST')
    await expectEngineError(fixture.disk.flush(), 'BAD_REQUEST')
  })

  it('makes a FUA write durable with the bit that exposes it', async () => {
    const fixture = await setup(C)
    await fixture.disk.write(2 * C, pattern(4, 16), { fua: true })
    expect(await bitmapByte(fixture, 0)).toBe(0b100)
    await fixture.disk.writeZeroes(0, 4, { fua: true })
    expect(await bitmapByte(fixture, 0)).toBe(0b101)
  })

  it('describes itself for info', async () => {
    const fixture = await setup(C)
    await fixture.disk.write(0, Buffer.alloc(1, 1))
    const info = await fixture.disk.info()
    expect(info).toMatchObject({
      filename: fixture.overlay,
      format: 'add-cow',
      'virtual-size': fixture.size,
      'cluster-size': C,
      'backing-filename': 'base.raw',
      'full-backing-filename': fixture.base,
      'backing-filename-format': 'raw',
      'data-file': 'overlay.raw',
      'full-data-file': fixture.image,
      'data-file-format': 'raw',
      'allocated-clusters': 1,
      'total-clusters': 6,
      'all-allocated': false,
    })
    expect(info.names?.map((name) => [name.stored, name.followed, name.reason])).toEqual([
      ['base.raw', true, 'inside-folder'],
      ['overlay.raw', true, 'inside-folder'],
    ])
    expect(info.warnings).toBeUndefined()
  })
})

describe('flush ordering and write-back', () => {
  function record(): FileEvent[] {
    const events: FileEvent[] = []
    setFileObserver({
      after: (event) =>
        events.push(event.kind === 'write' ? { ...event, data: Buffer.from(event.data) } : event),
    })
    return events
  }

  it('syncs the image file before it writes the bits that expose its data', async () => {
    const fixture = await setup(65536)
    const events = record()
    await fixture.disk.write(100, pattern(10, 1))
    await fixture.disk.write(3 * 65536, pattern(65536, 2))
    await fixture.disk.flush()
    const described = events.map(
      (event) =>
        `${event.kind} ${event.path === fixture.image ? 'image' : event.path === fixture.overlay ? 'meta' : event.path}`,
    )
    const lastImageWrite = described.lastIndexOf('write image')
    const imageSync = described.indexOf('sync image')
    const metaWrite = described.indexOf('write meta')
    const metaSync = described.indexOf('sync meta')
    expect(lastImageWrite).toBeGreaterThanOrEqual(0)
    expect(lastImageWrite).toBeLessThan(imageSync)
    expect(imageSync).toBeLessThan(metaWrite)
    expect(metaWrite).toBeLessThan(metaSync)
    expect(described.slice(metaSync + 1)).toEqual([])
    const bitmapWrite = events[metaWrite] as Extract<FileEvent, { kind: 'write' }>
    expect(bitmapWrite.position).toBe(65536)
    expect(bitmapWrite.data[0]).toBe(0b1001)
    // Nothing dirty: a flush only syncs the image file.
    events.length = 0
    await fixture.disk.flush()
    expect(
      events.map((event) => event.kind + (event.path === fixture.image ? ' image' : ' meta')),
    ).toEqual(['sync image'])
  })

  it('writes back only the dirty 4 KiB chunks of a large bitmap', async () => {
    const folder = await tempDir()
    cleanup = folder.cleanup
    const clusterSize = 4096
    const clustersPerChunk = BITMAP_CHUNK * 8
    const size = 3 * clustersPerChunk * clusterSize // three chunks of bitmap, 384 MiB sparse
    await makeSparse(join(folder.path, 'base.raw'), size)
    const overlay = join(folder.path, 'big.add-cow')
    await createOverlay({ overlay, backing: 'base.raw', clusterSize })
    const disk = await openOverlay(overlay)
    const events = record()
    await disk.write(0, Buffer.alloc(1, 1))
    await disk.write((2 * clustersPerChunk + 9) * clusterSize, Buffer.alloc(1, 1))
    await disk.flush()
    const metaWrites = events.filter(
      (event): event is Extract<FileEvent, { kind: 'write' }> =>
        event.kind === 'write' && event.path === overlay,
    )
    expect(metaWrites.map((event) => [event.position, event.data.length])).toEqual([
      [4096, BITMAP_CHUNK],
      [4096 + 2 * BITMAP_CHUNK, BITMAP_CHUNK],
    ])
    expect(metaWrites[1]!.data[1]).toBe(0b10)
    const file = await readFile(overlay)
    expect(file.length).toBe(4096 + 3 * BITMAP_CHUNK)
    expect(file[4096]).toBe(1)
    expect(file[4096 + 2 * BITMAP_CHUNK + 1]).toBe(2)
  })

  it('keeps dirty chunks dirty when the write-back fails, and writes them on the next flush', async () => {
    const fixture = await setup(4096)
    await fixture.disk.write(0, Buffer.alloc(4096, 3))
    let failing = true
    setFileObserver({
      before: (event) => {
        if (failing && event.kind === 'write' && event.path === fixture.overlay)
          throw new Error('EIO (simulated)')
      },
    })
    const error = await expectEngineError(fixture.disk.flush(), 'IO_ERROR')
    expect(error.message).toContain(fixture.overlay)
    expect(await bitmapByte(fixture, 0)).toBe(0)
    failing = false
    await fixture.disk.flush()
    expect(await bitmapByte(fixture, 0)).toBe(1)
  })
})
