// The facts generic code asks the driver table instead of testing a format's name (issue 11):
// which format is the fallback a probe gives (info's "named like" note), and which format's
// clusters a live snapshot's new top shares. Each is checked on add-cow, a draft, qcow2, cow and
// raw, through the operation that uses it.
import { copyFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { liveSnapshot } from '../../../../main/engine/live/snapshot'
import { openImage } from '../../../../main/engine/open'
import { imageInfo } from '../../../../main/engine/ops/info'
import { findFormat, listFormats, loadDriver } from '../../../../main/engine/registry'
import { startExport } from '../../../../main/nbd/start-export'
import { buildEmptyQcow2, buildV12 } from '../../../helpers/format-builders'
import { libraryIn, pattern } from '../../../helpers/images'
import { tempDir } from '../../../helpers/tools'

const SIZE = 1024 * 1024
const CLUSTER = 16 * 1024
/** The cluster size a new overlay takes when its base has none to share. */
const DEFAULT_CLUSTER = 64 * 1024

let dir: string
let cleanup: () => Promise<void>
beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-format-facts-'))
})
afterEach(async () => {
  await cleanup()
})

/** One image of each format in `dir`, named with its format's usual ending. */
async function imageOf(format: string): Promise<string> {
  const base = join(dir, 'base.raw')
  await writeFile(base, pattern(SIZE, 3))
  const backing = { name: 'base.raw', format: 'raw', path: base, size: SIZE }
  switch (format) {
    case 'add-cow': {
      const path = join(dir, 'top.add-cow')
      await (
        await loadDriver('add-cow')
      ).create!({ path, backing, clusterSize: CLUSTER })
      return path
    }
    case 'cow': {
      const path = join(dir, 'top.cow')
      await (
        await loadDriver('cow')
      ).create!({ path, backing })
      return path
    }
    case 'qcow2': {
      const path = join(dir, 'top.qcow2')
      await writeFile(path, buildEmptyQcow2(SIZE))
      return path
    }
    case 'add-cow-v12': {
      const path = join(dir, 'top.add-cow')
      await writeFile(join(dir, 'top.img'), Buffer.alloc(SIZE))
      await writeFile(path, buildV12({ size: SIZE, image: 'top.img', allocated: new Set() }))
      return path
    }
    default: {
      const path = join(dir, 'top.raw')
      await copyFile(base, path)
      return path
    }
  }
}

const FORMATS = ['add-cow', 'add-cow-v12', 'qcow2', 'cow', 'raw']

describe('the fallback format (what a probe gives when no format claims a file)', () => {
  it('is raw alone', () => {
    expect(
      listFormats()
        .filter((format) => format.fallback)
        .map((format) => format.name),
    ).toEqual(['raw'])
  })

  it.each(FORMATS)('info of a %s image carries no "named like" note', async (format) => {
    const [info] = await imageInfo(await imageOf(format))
    expect(info!.format).toBe(format)
    expect(info!.warnings ?? []).not.toContainEqual(expect.stringContaining('named like'))
  })

  it('info of a raw file named like a qcow2 image says so, unless the format was given', async () => {
    const path = join(dir, 'fake.qcow2')
    await writeFile(path, Buffer.alloc(SIZE, 0x20))
    const [probed] = await imageInfo(path)
    expect(probed!.warnings).toContainEqual(
      expect.stringContaining('is named like a qcow2 image but has no qcow2 header'),
    )
    const [given] = await imageInfo(path, { format: 'raw' })
    expect(given!.warnings ?? []).not.toContainEqual(expect.stringContaining('named like'))
  })
})

describe("the served top's cluster size in a live snapshot", () => {
  it.each([
    ['add-cow', CLUSTER],
    ['qcow2', DEFAULT_CLUSTER],
    ['cow', DEFAULT_CLUSTER],
    ['raw', DEFAULT_CLUSTER],
  ])('a %s top gives the new top %i-byte clusters', async (format, expected) => {
    const image = await imageOf(format)
    const handle = await startExport({
      image,
      format,
      listen: { socket: join(dir, 'nbd.sock') },
      library: libraryIn(join(dir, 'data')),
    })
    try {
      const snapshot = await liveSnapshot(handle.target)
      const top = await openImage(snapshot.top, { format: 'add-cow', readOnly: true })
      try {
        expect(top.allocationUnit).toBe(expected)
      } finally {
        await top.close()
      }
    } finally {
      await handle.stop()
    }
  })

  it('only add-cow shares its clusters; the drafts, whose units the current layout may refuse, do not', () => {
    const sharing = listFormats()
      .filter((format) => format.sharesClusterSize)
      .map((format) => format.name)
    expect(sharing).toEqual(['add-cow'])
    expect(findFormat('add-cow-v18')?.sharesClusterSize).toBeUndefined()
  })
})
