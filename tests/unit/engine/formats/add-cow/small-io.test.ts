// Small guest I/O, as an NBD client at queue depth 16 makes it: 16 writes of up to 4 KiB at a
// time into an overlay on a raw base (most land in unallocated clusters: copy-on-write fills,
// whose buffers are reused from one fill to the next), made on the calling thread (the default
// for writes of up to 16 KiB) or on the thread pool; then small reads, inside one cluster (the
// page-cache fast path) or across clusters, with the page-cache path on and off. Every byte
// must be the guest view: a fill buffer handed out twice, or a write made twice or not at all,
// shows up as a wrong byte here.
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Disk } from '../../../../../main/engine/disk'
import { setInlineWritesEnabled } from '../../../../../main/engine/file'
import { setReadCachedEnabled } from '../../../../../main/engine/native/index'
import { openImage } from '../../../../../main/engine/open'
import { createOverlay } from '../../../../../main/engine/ops/create'
import { makeRaw, pattern } from '../../../../helpers/images'
import { seededRandom as random } from '../../../../helpers/numbers'
import { diskTempDir } from '../../../../helpers/tools'

const SIZE = 4 * 1024 * 1024
const SLOT = 4096
const QUEUE_DEPTH = 16

/** Writes of 1 to 4096 bytes in distinct 4 KiB slots (no two overlap), 16 in flight at once. */
async function writeConcurrently(disk: Disk, model: Buffer, seed: number): Promise<void> {
  const next = random(seed)
  const slots = Array.from({ length: SIZE / SLOT }, (_, index) => index)
  for (let index = slots.length - 1; index > 0; index--) {
    const other = Math.floor(next() * (index + 1))
    ;[slots[index], slots[other]] = [slots[other]!, slots[index]!]
  }
  const chosen = slots.slice(0, 600)
  for (let start = 0; start < chosen.length; start += QUEUE_DEPTH) {
    await Promise.all(
      chosen.slice(start, start + QUEUE_DEPTH).map((slot, index) => {
        const length = 1 + Math.floor(next() * SLOT)
        const offset = slot * SLOT + Math.floor(next() * (SLOT - length + 1))
        const data = pattern(length, seed + start + index, offset)
        data.copy(model, offset)
        return disk.write(offset, data)
      }),
    )
  }
}

/** Small reads at random places: the offsets and lengths of each, and what came back. */
async function readSmall(disk: Disk, seed: number): Promise<[number, number, Buffer][]> {
  const next = random(seed)
  const reads: [number, number, Buffer][] = []
  for (let index = 0; index < 400; index++) {
    const length = 1 + Math.floor(next() * 2 * SLOT)
    const offset = Math.floor(next() * (SIZE - length))
    reads.push([offset, length, await disk.read(offset, length)])
  }
  return reads
}

describe.each([4096, 65536])('small add-cow I/O at queue depth 16, %i-byte clusters', (cluster) => {
  let folder: Awaited<ReturnType<typeof diskTempDir>>
  beforeAll(async () => {
    folder = await diskTempDir()
  })
  afterAll(async () => {
    setInlineWritesEnabled(true)
    setReadCachedEnabled(true)
    await folder.cleanup()
  })

  it.each([
    ['on the calling thread', true],
    ['on the thread pool', false],
  ])('writes made %s read back as written', async (_label, inline) => {
    const dir = join(folder.path, `${cluster}-${inline ? 'inline' : 'pool'}`)
    await mkdir(dir)
    const model = await makeRaw(join(dir, 'base.raw'), SIZE, 3)
    await createOverlay({
      overlay: join(dir, 'top.add-cow'),
      backing: 'base.raw',
      clusterSize: cluster,
    })
    const disk = await openImage(join(dir, 'top.add-cow'), { readOnly: false })
    try {
      setInlineWritesEnabled(inline)
      await writeConcurrently(disk, model, 17)
    } finally {
      setInlineWritesEnabled(true)
      await disk.close()
    }
    const reopened = await openImage(join(dir, 'top.add-cow'))
    try {
      expect((await reopened.read(0, SIZE)).equals(model)).toBe(true)
      for (const cached of [true, false]) {
        setReadCachedEnabled(cached)
        for (const [offset, length, data] of await readSmall(reopened, 5)) {
          expect(
            data.equals(model.subarray(offset, offset + length)),
            `read of ${length} bytes at ${offset}, page-cache path ${cached ? 'on' : 'off'}`,
          ).toBe(true)
        }
      }
    } finally {
      setReadCachedEnabled(true)
      await reopened.close()
    }
  })
})
