import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { Disk } from '../../../../main/engine/disk'
import { isEngineError } from '../../../../main/engine/errors'
import { LiveDisk, lockGranule } from '../../../../main/engine/live/live-disk'
import { RangeLock } from '../../../../main/engine/live/range-lock'
import { openImage } from '../../../../main/engine/open'
import { createOverlay } from '../../../../main/engine/ops/create'
import { pattern } from '../../../helpers/images'
import { tempDir } from '../../../helpers/tools'

const MIB = 1024 * 1024
const CLUSTER = 64 * 1024
const cleanups: (() => Promise<void>)[] = []

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** A 4 MiB add-cow overlay over a patterned raw base, open for writing. */
async function overlayDisk(): Promise<{ disk: Disk; folder: string }> {
  const folder = await tempDir('addcow-live-')
  cleanups.push(folder.cleanup)
  await writeFile(join(folder.path, 'base.raw'), pattern(4 * MIB, 7))
  const overlay = join(folder.path, 'top.add-cow')
  await createOverlay({
    overlay,
    backing: 'base.raw',
    backingFormat: 'raw',
    clusterSize: CLUSTER,
  })
  const disk = await openImage(overlay, { readOnly: false })
  cleanups.push(() => disk.close().catch(() => undefined))
  return { disk, folder: folder.path }
}

/** A promise and the function that settles it. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void
  const promise = new Promise<void>((done) => (resolve = done))
  return { promise, resolve }
}

/** Let every ready callback run (I/O to a tmpfs file takes a few turns). */
async function settle(): Promise<void> {
  for (let turn = 0; turn < 20; turn++) await new Promise((done) => setImmediate(done))
}

describe('LiveDisk', () => {
  it('forwards the guest view and the abilities of the top it serves', async () => {
    const { disk } = await overlayDisk()
    const live = new LiveDisk(disk)
    expect(live.size).toBe(disk.size)
    expect(live.path).toBe(disk.path)
    expect(live.format).toBe('add-cow')
    expect(live.backing).toBe(disk.backing)
    expect(await live.read(MIB, 4096)).toEqual(pattern(4 * MIB, 7).subarray(MIB, MIB + 4096))
    await live.write(MIB, Buffer.alloc(4096, 0xab))
    expect(await disk.read(MIB, 4096)).toEqual(Buffer.alloc(4096, 0xab))
    // The abilities are the top's, bound to it: the overlay's bit for that cluster is set.
    expect(typeof live.markAllocated).toBe('function')
    expect(live.countAllocated!(MIB / CLUSTER, MIB / CLUSTER + 1)).toBe(1)
    expect(live.files!()).toEqual(disk.files!())
    // A raw base has no allocation map: the ability is absent, as on the raw disk itself.
    const raw = new LiveDisk(disk.backing!)
    expect(raw.markAllocated).toBeUndefined()
    expect(raw.forEachAllocationRun).toBe(disk.backing!.forEachAllocationRun)
  })

  it('holds requests that arrive during quiesce and lets them go afterwards, none lost', async () => {
    const { disk } = await overlayDisk()
    const live = new LiveDisk(disk)
    const early = live.write(0, Buffer.alloc(4096, 1))
    const inside = deferred()
    const leave = deferred()
    let lateDone = false
    const quiesced = live.quiesce(async (current) => {
      // The write issued before the quiesce finished before it ran.
      expect(await current.read(0, 4096)).toEqual(Buffer.alloc(4096, 1))
      inside.resolve()
      await leave.promise
      return 'done'
    })
    await inside.promise
    const late = live.write(8192, Buffer.alloc(4096, 2)).then(() => (lateDone = true))
    const lateRead = live.read(8192, 4096)
    await settle()
    expect(lateDone).toBe(false)
    expect(live.pending).toBe(0)
    leave.resolve()
    expect(await quiesced).toBe('done')
    await early
    await late
    expect(lateDone).toBe(true)
    // A read held with the write sees the state after the quiesce (either order is valid
    // between two pipelined requests; it was not lost).
    expect((await lateRead).length).toBe(4096)
    expect(await disk.read(8192, 4096)).toEqual(Buffer.alloc(4096, 2))
  })

  it('swaps the top inside quiesce only, and serves the new top from then on', async () => {
    const { disk } = await overlayDisk()
    const other = await overlayDisk()
    const live = new LiveDisk(disk)
    expect(() => live.swap(other.disk)).toThrow(/only inside quiesce/)
    const old = await live.quiesce(async () => live.swap(other.disk))
    expect(old).toBe(disk)
    expect(live.current).toBe(other.disk)
    expect(live.swapCount).toBe(1)
    await live.write(0, Buffer.alloc(4096, 9))
    expect(await other.disk.read(0, 4096)).toEqual(Buffer.alloc(4096, 9))
    expect(await disk.read(0, 4096)).toEqual(pattern(4 * MIB, 7).subarray(0, 4096))
  })

  it('tells swap observers of each new top, inside the quiesce, until they stop', async () => {
    const { disk } = await overlayDisk()
    const other = await overlayDisk()
    const live = new LiveDisk(disk)
    const seen: [string, string, number][] = []
    const stop = live.onSwap((next, previous) =>
      seen.push([next.path, previous.path, live.swapCount]),
    )
    live.onSwap(() => {
      throw new Error('an observer that fails')
    })
    // A write the quiesce holds lands on the new top: the observer ran before it was let go.
    let held: Promise<void> | null = null
    await live.quiesce(async () => {
      held = live.write(0, Buffer.alloc(4096, 3))
      live.swap(other.disk)
      expect(seen).toEqual([[other.disk.path, disk.path, 1]])
    })
    await held
    expect(live.current).toBe(other.disk)
    stop()
    await live.quiesce(async () => live.swap(disk))
    expect(seen).toHaveLength(1)
    expect(live.current).toBe(disk)
  })

  it('flushes an old top swapped out unflushed with every flush until it is frozen', async () => {
    const { disk } = await overlayDisk()
    const other = await overlayDisk()
    const live = new LiveDisk(disk)
    await live.write(2 * CLUSTER, Buffer.alloc(4096, 7))
    await live.quiesce(async () => live.swap(other.disk), { flush: false })
    // On disk, the old top's bitmap does not have the write yet.
    const before = await openImage(disk.path, { readOnly: true })
    expect(before.countAllocated!(0, 16)).toBe(0)
    await before.close()
    await live.flush()
    const after = await openImage(disk.path, { readOnly: true })
    expect(after.countAllocated!(0, 16)).toBe(1)
    await after.close()
    await disk.freeze!()
    expect(disk.readOnly).toBe(true)
    await expect(disk.write(0, Buffer.alloc(512))).rejects.toThrow(/read-only/)
  })

  it('refuses a new top of another size', async () => {
    const { disk } = await overlayDisk()
    const live = new LiveDisk(disk)
    const smaller = { ...disk, size: disk.size - CLUSTER } as Disk
    const failure = await live.quiesce(async () => live.swap(smaller)).catch((error) => error)
    expect(isEngineError(failure, 'INTERNAL')).toBe(true)
    expect(live.current).toBe(disk)
  })

  it('releases held requests when the quiesced function throws', async () => {
    const { disk } = await overlayDisk()
    const live = new LiveDisk(disk)
    const failing = live.quiesce(async () => {
      throw new Error('boom')
    })
    const write = live.write(0, Buffer.alloc(4096, 3))
    await expect(failing).rejects.toThrow('boom')
    await write
    expect(await disk.read(0, 4096)).toEqual(Buffer.alloc(4096, 3))
  })

  it('locks the clusters a job range touches against guest writes, and no others', async () => {
    const { disk } = await overlayDisk()
    const live = new LiveDisk(disk)
    expect(lockGranule(disk)).toBe(CLUSTER)
    const inside = deferred()
    const leave = deferred()
    const job = live.withRanges(CLUSTER, CLUSTER, async (current) => {
      inside.resolve()
      await leave.promise
      // The job's copy lands first; the guest write to the same cluster, held, lands after.
      await current.write(CLUSTER, Buffer.alloc(CLUSTER, 0x11))
    })
    await inside.promise
    let sameDone = false
    let otherDone = false
    const same = live.write(CLUSTER + 4096, Buffer.alloc(512, 0x22)).then(() => (sameDone = true))
    const other = live.write(3 * CLUSTER, Buffer.alloc(512, 0x33)).then(() => (otherDone = true))
    await other
    await settle()
    expect(otherDone).toBe(true)
    expect(sameDone).toBe(false)
    leave.resolve()
    await job
    await same
    const cluster = await disk.read(CLUSTER, CLUSTER)
    expect(cluster.subarray(4096, 4608)).toEqual(Buffer.alloc(512, 0x22))
    expect(cluster.subarray(0, 4096)).toEqual(Buffer.alloc(4096, 0x11))
  })

  it('tells observers about every guest write, zero write and discard until unsubscribed', async () => {
    const { disk } = await overlayDisk()
    const live = new LiveDisk(disk)
    const seen: [number, number][] = []
    const stop = live.onGuestWrite((offset, length) => seen.push([offset, length]))
    await live.write(4096, Buffer.alloc(4096, 1))
    await live.writeZeroes(MIB, 2 * CLUSTER)
    await live.discard(2 * MIB, CLUSTER)
    await live.read(0, 4096)
    stop()
    await live.write(0, Buffer.alloc(512, 1))
    expect(seen).toEqual([
      [4096, 4096],
      [MIB, 2 * CLUSTER],
      [2 * MIB, CLUSTER],
    ])
  })
})

describe('RangeLock', () => {
  it('grants in arrival order: a waiting range blocks later overlapping ones', async () => {
    const lock = new RangeLock()
    const order: string[] = []
    const first = await lock.acquire(0, 2)
    const wide = lock.acquire(0, 10).then((release) => {
      order.push('wide')
      return release
    })
    // Overlaps only the waiting wide range: it must not overtake it.
    const later = lock.acquire(5, 6).then((release) => {
      order.push('later')
      return release
    })
    // Overlaps nothing: granted at once.
    const apart = await lock.acquire(20, 21)
    order.push('apart')
    await settle()
    expect(order).toEqual(['apart'])
    first()
    ;(await wide)()
    ;(await later)()
    apart()
    expect(order).toEqual(['apart', 'wide', 'later'])
    expect(lock.busy).toBe(0)
  })
})
