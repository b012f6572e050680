import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { BlockExtent, Disk, FormatDriver } from '../../../../../main/engine/disk'
import { RawDisk } from '../../../../../main/engine/formats/raw/raw'
import { openImage } from '../../../../../main/engine/open'
import { createOverlay } from '../../../../../main/engine/ops/create'
import { registerDriver } from '../../../../../main/engine/registry'
import { tempDir } from '../../../../helpers/tools'
import { pattern } from '../../../../helpers/images'

/**
 * A test format: a raw file that starts with "GATE", whose reads wait at a gate the test opens.
 * It lets a test hold the partial-cluster fill (which reads the backing disk) in mid-flight and
 * see which other writes proceed meanwhile.
 */
class Gate {
  closed = false
  private waiters: (() => void)[] = []
  private watchers: { count: number; resolve: () => void }[] = []

  get waiting(): number {
    return this.waiters.length
  }

  async pass(): Promise<void> {
    if (!this.closed) return
    await new Promise<void>((resolve) => {
      this.waiters.push(resolve)
      for (const watcher of this.watchers.filter((entry) => entry.count <= this.waiters.length))
        watcher.resolve()
    })
  }

  /** Resolves once `count` reads wait at the gate. */
  reached(count: number): Promise<void> {
    if (this.waiters.length >= count) return Promise.resolve()
    return new Promise((resolve) => this.watchers.push({ count, resolve }))
  }

  open(): void {
    this.closed = false
    for (const resolve of this.waiters.splice(0)) resolve()
  }
}

const gate = new Gate()

class GatedDisk implements Disk {
  readonly format = 'gate'
  constructor(private readonly inner: RawDisk) {}
  get path() {
    return this.inner.path
  }
  get size() {
    return this.inner.size
  }
  readonly readOnly = true
  get capabilities() {
    return this.inner.capabilities
  }
  readonly allocationUnit = 1
  readonly backing = null
  async readInto(target: Uint8Array, offset: number): Promise<void> {
    await gate.pass()
    await this.inner.readInto(target, offset)
  }
  async read(offset: number, length: number): Promise<Buffer> {
    const buffer = Buffer.alloc(length)
    await this.readInto(buffer, offset)
    return buffer
  }
  write(): Promise<void> {
    throw new Error('read-only')
  }
  writeZeroes(): Promise<void> {
    throw new Error('read-only')
  }
  discard(): Promise<void> {
    return Promise.resolve()
  }
  flush(): Promise<void> {
    return Promise.resolve()
  }
  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return this.inner.blockStatus(offset, length)
  }
  info() {
    return this.inner.info()
  }
  close(): Promise<void> {
    return this.inner.close()
  }
}

const gateDriver: FormatDriver = {
  name: 'gate',
  probe: (head) => (Buffer.from(head.subarray(0, 4)).toString('latin1') === 'GATE' ? 50 : 0),
  open: async (path) => new GatedDisk(await RawDisk.open(path, true)),
}
registerDriver(gateDriver)

const C = 65536
let cleanup: (() => Promise<void>) | null = null
let disk: Disk | null = null

afterEach(async () => {
  gate.open()
  await disk?.close()
  disk = null
  await cleanup?.()
  cleanup = null
})

async function setup(): Promise<{ disk: Disk; model: Buffer }> {
  const folder = await tempDir()
  cleanup = folder.cleanup
  const base = pattern(4 * C, 1)
  base.write('GATE', 0, 'latin1')
  await writeFile(join(folder.path, 'base.gate'), base)
  const overlay = join(folder.path, 'overlay.add-cow')
  await createOverlay({ overlay, backing: 'base.gate', backingFormat: 'gate' })
  disk = await openImage(overlay)
  expect(disk.backing?.format).toBe('gate')
  return { disk, model: Buffer.from(base) }
}

/** Let every ready callback and I/O completion run a few times over. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((resolve) => setImmediate(resolve))
}

describe('concurrent writes to an add-cow overlay', () => {
  it('fill different unallocated clusters in parallel', async () => {
    const { disk, model } = await setup()
    gate.closed = true
    // Each write covers its cluster from offset 10 to the end: one fill (the head) each.
    const first = disk.write(10, pattern(C - 10, 2))
    const second = disk.write(2 * C + 10, pattern(C - 10, 3))
    // Both fills are reading the base at once: neither write waits for the other.
    await gate.reached(2)
    expect(gate.waiting).toBe(2)
    gate.open()
    await Promise.all([first, second])
    pattern(C - 10, 2).copy(model, 10)
    pattern(C - 10, 3).copy(model, 2 * C + 10)
    expect((await disk.read(0, disk.size)).equals(model)).toBe(true)
  })

  it('order writes to the same unallocated cluster, so a fill never overwrites newer data', async () => {
    const { disk, model } = await setup()
    gate.closed = true
    let secondDone = false
    // The first write needs a head fill of cluster 1, the second a tail fill of it: run
    // unordered, the second's fill could land over the first's data.
    const first = disk.write(C + 10, pattern(C - 10, 4))
    const second = disk.write(C, pattern(5, 5)).then(() => {
      secondDone = true
    })
    const third = disk.write(C - 50, pattern(50, 6)) // cluster 0 only
    await gate.reached(2)
    await settle()
    // The first writer fills cluster 1 and the third fills cluster 0, in parallel; the second
    // waits for cluster 1's lock and has not even started its fill.
    expect(gate.waiting).toBe(2)
    expect(secondDone).toBe(false)
    gate.open()
    await Promise.all([first, second, third])
    pattern(C - 10, 4).copy(model, C + 10)
    pattern(5, 5).copy(model, C)
    pattern(50, 6).copy(model, C - 50)
    expect((await disk.read(0, disk.size)).equals(model)).toBe(true)
  })

  it('let many parallel writes of every shape land exactly once', async () => {
    const { disk, model } = await setup()
    const writes: [number, Buffer][] = []
    for (let i = 0; i < 24; i++) {
      // Disjoint slices: eight per cluster over three clusters, in a shuffled order.
      const slot = (i * 7) % 24
      const offset = Math.floor(slot / 8) * C + (slot % 8) * (C / 8) + (slot % 3)
      writes.push([offset, pattern(C / 8 - 3, 10 + i)])
    }
    await Promise.all(writes.map(([offset, data]) => disk.write(offset, data)))
    for (const [offset, data] of writes) data.copy(model, offset)
    expect((await disk.read(0, disk.size)).equals(model)).toBe(true)
    await disk.flush()
  })
})
