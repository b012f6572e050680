import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { openImage } from '../../../main/engine/open'
import { createOverlay } from '../../../main/engine/ops/create'
import { diskSourceFor } from '../../../main/qemu/launcher'
import { tempDir } from '../../helpers/tools'

let cleanup: (() => Promise<void>) | null = null
afterEach(async () => {
  await cleanup?.()
  cleanup = null
})

describe('which images each mode accepts', () => {
  it('runs a flattened overlay raw, refuses raw for one that still reads its base, and native only for add-cow', async () => {
    const folder = await tempDir('addcow-qemu-source-')
    cleanup = folder.cleanup
    await writeFile(join(folder.path, 'base.raw'), Buffer.alloc(1024 * 1024, 1))
    await createOverlay({
      overlay: join(folder.path, 'layered.add-cow'),
      backing: 'base.raw',
      backingFormat: 'raw',
    })
    await createOverlay({ overlay: join(folder.path, 'standalone.add-cow'), size: 1024 * 1024 })

    const layered = await openImage(join(folder.path, 'layered.add-cow'), { readOnly: true })
    const standalone = await openImage(join(folder.path, 'standalone.add-cow'), { readOnly: true })
    const base = await openImage(join(folder.path, 'base.raw'), { readOnly: true })
    try {
      expect(() => diskSourceFor(layered, 'raw')).toThrow(
        /is not flattened \(16 of its 16 clusters still come from its base\).*addcow stream/,
      )
      expect(diskSourceFor(layered, 'native')).toEqual({ via: 'native', path: layered.path })
      expect(diskSourceFor(standalone, 'raw')).toEqual({
        via: 'raw',
        path: join(folder.path, 'standalone.raw'),
      })
      expect(diskSourceFor(base, 'raw')).toEqual({ via: 'raw', path: base.path })
      expect(() => diskSourceFor(base, 'native')).toThrow(
        /--via native runs QEMU's add-cow driver, but .*base.raw is a raw image/,
      )
    } finally {
      await layered.close()
      await standalone.close()
      await base.close()
    }
  })
})
