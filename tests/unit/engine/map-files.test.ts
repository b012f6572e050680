// Disk.mapFiles: where a range of the guest view lies in plain files, for the NBD server's
// zero-copy reads. Read back through the mapping (pread of each piece), every range must equal
// what the disk reads itself, down a chain three deep whose base is shorter than the top.
import { readSync } from 'node:fs'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { Disk, FileMapping } from '../../../main/engine/disk'
import { LiveDisk } from '../../../main/engine/live/live-disk'
import { createOverlay } from '../../../main/engine/ops/create'
import { pattern, perTestFolder } from '../../helpers/images'
import { seededRandom } from '../../helpers/numbers'
import { requireTools, tool } from '../../helpers/tools'

const MIB = 1024 * 1024
const CLUSTER = 64 * 1024
const folder = perTestFolder('addcow-map-files-')

/** The bytes a mapping stands for, read from its files. */
function readMapping(mapping: FileMapping, length: number): Buffer {
  const out = Buffer.alloc(length)
  let at = 0
  const { pieces } = mapping
  for (let index = 0; index < pieces.length; index += 3) {
    const [fd, position, size] = [pieces[index]!, pieces[index + 1]!, pieces[index + 2]!]
    // Zeros where fd is -1, and past a file's end (Buffer.alloc's zeros stay).
    if (fd >= 0) readSync(fd, out, at, size, position)
    at += size
  }
  expect(at).toBe(length)
  return out
}

/**
 * base.raw (3 MiB) <- mid.add-cow (4 MiB, every third cluster written) <- top.add-cow (every
 * fifth cluster written), opened writable.
 */
async function chain(): Promise<Disk> {
  const dir = folder.dir
  await writeFile(join(dir, 'base.raw'), pattern(3 * MIB, 1))
  await createOverlay({
    overlay: join(dir, 'mid.add-cow'),
    backing: 'base.raw',
    backingFormat: 'raw',
    size: 4 * MIB,
    clusterSize: CLUSTER,
  })
  const mid = await folder.opened(join(dir, 'mid.add-cow'), false)
  for (let cluster = 0; cluster < 64; cluster += 3)
    await mid.write(cluster * CLUSTER + 512, pattern(CLUSTER - 1024, 100 + cluster))
  await mid.close()
  await createOverlay({
    overlay: join(dir, 'top.add-cow'),
    backing: 'mid.add-cow',
    backingFormat: 'add-cow',
    clusterSize: CLUSTER,
  })
  const top = await folder.opened(join(dir, 'top.add-cow'), false)
  for (let cluster = 1; cluster < 64; cluster += 5)
    await top.write(cluster * CLUSTER, pattern(CLUSTER, 200 + cluster))
  return top
}

describe('Disk.mapFiles', () => {
  it('maps a chain three deep to its files, zeros past the shorter base', async () => {
    const top = await chain()
    const next = seededRandom(5)
    const ranges: [number, number][] = [
      [0, 4 * MIB],
      [3 * MIB - 100, 200],
      [3 * MIB, MIB],
      [CLUSTER - 1, 2],
    ]
    for (let index = 0; index < 40; index++) {
      const offset = Math.floor(next() * 4 * MIB)
      ranges.push([offset, Math.min(4 * MIB - offset, 1 + Math.floor(next() * 600_000))])
    }
    for (const [offset, length] of ranges) {
      const mapping = top.mapFiles!(offset, length)!
      expect(mapping, `range ${offset}+${length}`).not.toBeNull()
      const expected = await top.read(offset, length)
      expect(readMapping(mapping, length).equals(expected), `range ${offset}+${length}`).toBe(true)
      mapping.release()
    }
    // Past the base's end, the mapping says zeros without a file.
    expect(top.mapFiles!(3 * MIB + 2 * CLUSTER, 4096)!.pieces).toEqual([-1, 0, 4096])
    expect(() => top.mapFiles!(4 * MIB - 10, 20)).toThrow(/outside|beyond|range/i)
  })

  it('maps the raw file itself', async () => {
    await writeFile(join(folder.dir, 'plain.raw'), pattern(MIB, 3))
    const raw = await folder.opened(join(folder.dir, 'plain.raw'))
    const mapping = raw.mapFiles!(1000, 5000)!
    expect(readMapping(mapping, 5000).equals(pattern(MIB, 3).subarray(1000, 6000))).toBe(true)
  })

  it.runIf(requireTools('qemu-img'))(
    'is null over a qcow2 layer, which is not a plain file',
    async () => {
      const dir = folder.dir
      await tool('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '1M'])
      await createOverlay({
        overlay: join(dir, 'top.add-cow'),
        backing: 'base.qcow2',
        backingFormat: 'qcow2',
        clusterSize: CLUSTER,
      })
      const top = await folder.opened(join(dir, 'top.add-cow'), false)
      await top.write(0, pattern(CLUSTER, 9))
      // The written cluster is in the image file; the rest would be read through qcow2.
      expect(top.mapFiles!(0, CLUSTER)).not.toBeNull()
      expect(top.mapFiles!(0, 2 * CLUSTER)).toBeNull()
    },
  )

  it('holds a live disk’s quiesce until released, and maps nothing while one runs', async () => {
    const top = await chain()
    const live = new LiveDisk(top)
    const mapping = live.mapFiles(0, MIB)!
    expect(mapping).not.toBeNull()
    expect(live.pending).toBe(1)
    let quiesced = false
    const quiesce = live.quiesce(async () => {
      quiesced = true
      // While it runs, new mappings are refused (a read waits its turn instead).
      expect(live.mapFiles(0, MIB)).toBeNull()
    })
    for (let turn = 0; turn < 20; turn++) await new Promise((done) => setImmediate(done))
    expect(quiesced).toBe(false)
    mapping.release()
    mapping.release()
    await quiesce
    expect(quiesced).toBe(true)
    expect(live.pending).toBe(0)
    live.copyOnRead = true
    expect(live.mapFiles(0, MIB)).toBeNull()
  })
})
