import { utimes } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Disk } from '../../../main/engine/disk'
import { Library } from '../../../main/engine/library'
import { openImage } from '../../../main/engine/open'
import { createOverlay } from '../../../main/engine/ops/create'
import { sumAllocation } from '../../../main/engine/ops/map'
import { ImageReaders } from '../../../main/ipc/image-readers'
import { makeSparseRaw, writeGuest } from '../../helpers/images'
import { tempDir } from '../../helpers/tools'

// The map channels' disks: kept open while the image's files do not change (so the bitmap's
// summary is built once), opened again when they do, and an image served by this process is
// read through the export's own disk, unflushed writes included.

const MIB = 1024 * 1024
const CLUSTER = 64 * 1024

let dir: string
let cleanup: () => Promise<void>
let library: Library

beforeAll(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-readers-'))
  library = new Library(join(dir, 'data', 'library.json'))
  await makeSparseRaw(join(dir, 'base.raw'), 16 * MIB, [[0, Buffer.alloc(MIB, 1)]])
  await createOverlay({
    overlay: join(dir, 'vm.add-cow'),
    backing: 'base.raw',
    backingFormat: 'raw',
  })
})

afterAll(async () => {
  await cleanup()
})

/** Clusters this image holds itself, as the map channels see them. */
async function ownBytes(readers: ImageReaders, path: string): Promise<number> {
  return readers.read(path, async (disk) => (await sumAllocation(disk, 2, 1)).totals.present[0]!)
}

describe('ImageReaders', () => {
  it('keeps an unchanged image open, and opens it again once one of its files changed', async () => {
    const readers = new ImageReaders(library, { quietMs: 0 })
    const overlay = join(dir, 'vm.add-cow')
    try {
      const first = await readers.read(overlay, async (disk) => disk)
      expect(await readers.read(overlay, async (disk) => disk)).toBe(first)
      expect(await ownBytes(readers, overlay)).toBe(0)
      // Another process writes (and flushes) a cluster: the add-cow file changes.
      await writeGuest(overlay, [[3 * MIB, Buffer.alloc(CLUSTER, 2)]])
      // Give the change a time of its own even on a file system with coarse times.
      const later = new Date(Date.now() + 5000)
      await utimes(overlay, later, later)
      expect(await ownBytes(readers, overlay)).toBe(CLUSTER)
      expect(await readers.read(overlay, async (disk) => disk)).not.toBe(first)
    } finally {
      await readers.closeAll()
    }
  })

  it('does not keep an image whose files changed just before it was opened', async () => {
    const readers = new ImageReaders(library, { quietMs: 60_000 })
    const overlay = join(dir, 'vm.add-cow')
    try {
      const first = await readers.read(overlay, async (disk) => disk)
      expect(await readers.read(overlay, async (disk) => disk)).not.toBe(first)
    } finally {
      await readers.closeAll()
    }
  })

  it('reads a served image through the export’s disk, writes not yet flushed included', async () => {
    const readers = new ImageReaders(library, { quietMs: 0 })
    const overlay = join(dir, 'vm.add-cow')
    const served: Disk = await openImage(overlay, { readOnly: false })
    try {
      const before = await ownBytes(readers, overlay)
      const stop = readers.serving(served)
      await new Promise((resolve) => setTimeout(resolve, 10))
      await served.write(9 * MIB, Buffer.alloc(CLUSTER, 3))
      expect(await readers.read(overlay, async (disk) => disk)).toBe(served)
      expect(await ownBytes(readers, overlay)).toBe(before + CLUSTER)
      stop()
      expect(await readers.read(overlay, async (disk) => disk)).not.toBe(served)
    } finally {
      await served.close()
      await readers.closeAll()
    }
  })

  it('closes the least recently used image past its limit', async () => {
    const readers = new ImageReaders(library, { quietMs: 0, limit: 1 })
    const overlay = join(dir, 'vm.add-cow')
    const base = join(dir, 'base.raw')
    try {
      const first = await readers.read(overlay, async (disk) => disk)
      await readers.read(base, async (disk) => disk)
      // The overlay was closed to make room: reading it again opens it again.
      expect(await readers.read(overlay, async (disk) => disk)).not.toBe(first)
      await expect(first.read(0, 512)).rejects.toMatchObject({ code: 'BAD_REQUEST' })
    } finally {
      await readers.closeAll()
    }
  })
})
