// One behaviour suite for every format this engine writes: each case makes a fresh image
// (through the driver table's create where the format has one), then drives it through read,
// write, writeZeroes, discard, flush, block status, FUA and reopen, checking the real bytes
// against an in-memory model of the guest view after every step.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { Disk } from '../../../../main/engine/disk'
import { openImage } from '../../../../main/engine/open'
import { loadDriver } from '../../../../main/engine/registry'
import { buildEmptyQcow2 } from '../../../helpers/format-builders'
import { pattern } from '../../../helpers/images'
import { seededRandom } from '../../../helpers/numbers'
import { tempDir } from '../../../helpers/tools'

/** An odd virtual size: the last add-cow cluster, cow sector and qcow2 cluster are partial. */
const SIZE = 3 * 1024 * 1024 + 3 * 4096 + 512
/** The base of the overlay cases: shorter than the overlay, so reads past it are zeros. */
const BASE_SIZE = 2 * 1024 * 1024 + 1000

interface Made {
  path: string
  format: string
  /** The guest view of a fresh image. */
  view: Buffer
}

interface FormatCase {
  name: string
  make(dir: string): Promise<Made>
}

/** A raw base of BASE_SIZE bytes holding a pattern; the fresh view of an overlay on it. */
async function base(dir: string): Promise<Buffer> {
  const data = pattern(BASE_SIZE, 11)
  await writeFile(join(dir, 'base.raw'), data)
  const view = Buffer.alloc(SIZE)
  data.copy(view)
  return view
}

const backing = { name: 'base.raw', format: 'raw', size: BASE_SIZE }

const CASES: FormatCase[] = [
  {
    name: 'add-cow over a raw base',
    async make(dir) {
      const view = await base(dir)
      const path = join(dir, 'image.add-cow')
      await (
        await loadDriver('add-cow')
      ).create!({
        path,
        size: SIZE,
        clusterSize: 4096,
        backing: { ...backing, path: join(dir, 'base.raw') },
      })
      return { path, format: 'add-cow', view }
    },
  },
  {
    name: 'add-cow with 64 KiB clusters and no base',
    async make(dir) {
      const path = join(dir, 'image.add-cow')
      await (
        await loadDriver('add-cow')
      ).create!({ path, size: SIZE })
      return { path, format: 'add-cow', view: Buffer.alloc(SIZE) }
    },
  },
  {
    name: 'raw',
    async make(dir) {
      const path = join(dir, 'image.raw')
      await (
        await loadDriver('raw')
      ).create!({ path, size: SIZE })
      return { path, format: 'raw', view: Buffer.alloc(SIZE) }
    },
  },
  {
    name: 'QEMU cow over a raw base',
    async make(dir) {
      const view = await base(dir)
      const path = join(dir, 'image.cow')
      await (
        await loadDriver('cow')
      ).create!({
        path,
        size: SIZE,
        backing: { ...backing, path: join(dir, 'base.raw') },
      })
      return { path, format: 'cow', view }
    },
  },
  {
    name: 'qcow2 (version 3, as qemu-img creates it)',
    async make(dir) {
      const path = join(dir, 'image.qcow2')
      await writeFile(path, buildEmptyQcow2(SIZE))
      return { path, format: 'qcow2', view: Buffer.alloc(SIZE) }
    },
  },
]

/** Random requests: offsets anywhere, often at or next to a 4 KiB boundary; short and long. */
function requests(seed: number, count: number): { offset: number; length: number }[] {
  const random = seededRandom(seed)
  const list: { offset: number; length: number }[] = []
  for (let index = 0; index < count; index++) {
    const aligned = random() < 0.5
    let offset = Math.floor(random() * SIZE)
    if (aligned)
      offset = Math.min(SIZE - 1, Math.floor(offset / 4096) * 4096 + [0, 1, 4095][index % 3]!)
    const length = Math.min(
      SIZE - offset,
      1 + Math.floor(random() * (random() < 0.3 ? 200_000 : 9000)),
    )
    list.push({ offset, length })
  }
  return list
}

describe.each(CASES)('$name', ({ make }) => {
  let dir: string
  let cleanup: () => Promise<void>
  let disk: Disk | null = null
  let made: Made
  /** The model: what the guest view must be. */
  let model: Buffer

  beforeEach(async () => {
    ;({ path: dir, cleanup } = await tempDir('addcow-behaviour-'))
    made = await make(dir)
    model = Buffer.from(made.view)
    disk = await openImage(made.path, { format: made.format })
  })
  afterEach(async () => {
    await disk?.close()
    disk = null
    await cleanup()
  })

  function open(): Disk {
    if (!disk) throw new Error('the disk is closed')
    return disk
  }

  async function expectView(): Promise<void> {
    const view = await open().read(0, SIZE)
    for (let offset = 0; offset < SIZE; offset += 65536) {
      const end = Math.min(SIZE, offset + 65536)
      expect(
        view.subarray(offset, end).equals(model.subarray(offset, end)),
        `guest bytes ${offset}..${end} differ from the model`,
      ).toBe(true)
    }
  }

  it('reads the fresh guest view, whole and in pieces', async () => {
    expect(open().size).toBe(SIZE)
    await expectView()
    for (const { offset, length } of requests(1, 30)) {
      expect(
        (await open().read(offset, length)).equals(model.subarray(offset, offset + length)),
      ).toBe(true)
    }
  })

  it('writes anywhere, aligned or not, and reads every byte back', async () => {
    for (const [index, { offset, length }] of requests(2, 40).entries()) {
      const data = pattern(length, index + 20, offset)
      await open().write(offset, data)
      data.copy(model, offset)
      const back = await open().read(offset, length)
      expect(back.equals(data), `the write at ${offset} (${length} bytes) reads back`).toBe(true)
    }
    await expectView()
  })

  it('writes zeroes over data and over what lies below', async () => {
    for (const [index, { offset, length }] of requests(3, 12).entries()) {
      const data = pattern(length, index + 40, offset)
      await open().write(offset, data)
      data.copy(model, offset)
    }
    for (const { offset, length } of requests(4, 12)) {
      await open().writeZeroes(offset, length)
      model.fill(0, offset, offset + length)
    }
    await expectView()
  })

  it('discards: the range reads as before or as zeros, nothing else changes', async () => {
    for (const [index, { offset, length }] of requests(5, 10).entries()) {
      const data = pattern(length, index + 60, offset)
      await open().write(offset, data)
      data.copy(model, offset)
    }
    const before = Buffer.from(model)
    const discarded = requests(6, 6)
    for (const { offset, length } of discarded) await open().discard(offset, length)
    const view = await open().read(0, SIZE)
    const inside = new Uint8Array(SIZE)
    for (const { offset, length } of discarded) inside.fill(1, offset, offset + length)
    // Collect the offending bytes first and assert once: an expect per changed byte (there are
    // hundreds of thousands) cost seconds.
    const changedOutside: number[] = []
    const notZeroInside: number[] = []
    for (let offset = 0; offset < SIZE; offset++) {
      if (view[offset] === before[offset]) continue
      if (inside[offset] !== 1) changedOutside.push(offset)
      else if (view[offset] !== 0) notZeroInside.push(offset)
    }
    expect(changedOutside, 'bytes changed outside every discarded range').toEqual([])
    expect(notZeroInside, 'bytes of a discarded range neither as before nor zero').toEqual([])
    if (!open().capabilities.discard) expect(view.equals(before)).toBe(true)
  })

  it('keeps every flushed write across close and reopen, FUA writes too', async () => {
    for (const [index, { offset, length }] of requests(7, 20).entries()) {
      const data = pattern(length, index + 80, offset)
      await open().write(offset, data, { fua: index % 5 === 0 })
      data.copy(model, offset)
      if (index % 7 === 6) await open().flush()
    }
    await open().flush()
    await open().close()
    disk = await openImage(made.path, { format: made.format, readOnly: true })
    await expectView()
  })

  it('reports block status that covers the disk and agrees with the bytes', async () => {
    for (const [index, { offset, length }] of requests(8, 15).entries()) {
      const data = pattern(length, index + 100, offset)
      await open().write(offset, data)
      data.copy(model, offset)
    }
    for (const { offset, length } of requests(9, 3)) {
      await open().writeZeroes(offset, length)
      model.fill(0, offset, offset + length)
    }
    for (const [offset, length] of [
      [0, SIZE],
      [4095, 70_000],
      [SIZE - 5000, 5000],
    ] as const) {
      const extents = await open().blockStatus(offset, length)
      let cursor = offset
      for (const extent of extents) {
        expect(extent.offset).toBe(cursor)
        expect(extent.length).toBeGreaterThan(0)
        if (extent.zero) {
          const bytes = model.subarray(extent.offset, extent.offset + extent.length)
          expect(
            bytes.every((byte) => byte === 0),
            `extent at ${extent.offset} says zero`,
          ).toBe(true)
        }
        if (!extent.present) expect(extent.zero).toBe(true)
        cursor += extent.length
      }
      expect(cursor).toBe(offset + length)
    }
  })
})
