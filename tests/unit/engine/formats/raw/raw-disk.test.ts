import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { canListDataExtents } from '../../../../../main/engine/formats/common/sparse'
import { openImage } from '../../../../../main/engine/open'
import { makeSparseRaw } from '../../../../helpers/images'
import { tempDir } from '../../../../helpers/tools'

// A raw disk remembers the last data extent and the last hole it found (one entry each, as
// qemu's file driver does); a write through the disk must not leave a remembered hole stale.

const MIB = 1024 * 1024

let dir: string
let cleanup: () => Promise<void>

beforeAll(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-raw-'))
})

afterAll(async () => {
  await cleanup()
})

describe.skipIf(!canListDataExtents())('raw block status over holes', () => {
  it('reports a hole as zeros, and as data once written through the same disk', async () => {
    const path = join(dir, 'sparse.raw')
    await makeSparseRaw(path, 64 * MIB, [[32 * MIB, Buffer.alloc(MIB, 1)]])
    const disk = await openImage(path, { readOnly: false, format: 'raw' })
    try {
      const hole = { depth: 0, present: true, zero: true }
      expect(await disk.blockStatus(MIB, MIB)).toEqual([{ offset: MIB, length: MIB, ...hole }])
      // Inside the hole found above: answered from memory, still a hole.
      expect(await disk.blockStatus(4 * MIB, MIB)).toEqual([
        { offset: 4 * MIB, length: MIB, ...hole },
      ])
      await disk.write(4 * MIB, Buffer.alloc(MIB, 2))
      expect(await disk.blockStatus(4 * MIB, MIB)).toEqual([
        { offset: 4 * MIB, length: MIB, depth: 0, present: true, zero: false },
      ])
      expect(await disk.blockStatus(2 * MIB, MIB)).toEqual([
        { offset: 2 * MIB, length: MIB, ...hole },
      ])
      expect(await disk.blockStatus(31 * MIB, 2 * MIB)).toEqual([
        { offset: 31 * MIB, length: MIB, ...hole },
        { offset: 32 * MIB, length: MIB, depth: 0, present: true, zero: false },
      ])
    } finally {
      await disk.close()
    }
  })
})
