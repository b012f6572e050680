import { mkdir, readdir, readFile, stat, symlink, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { tempDir } from '../../../helpers/tools'
import type { AddCowDisk } from '../../../../main/engine/formats/add-cow/add-cow-disk'
import { parseHeader } from '../../../../main/engine/formats/add-cow/header'

import { clusterBitsOf, createOverlay, defaultImageName } from '../../../../main/engine/ops/create'

import { makeRaw, perTestFolder } from '../../../helpers/images'
import { expectEngineError, expectEngineErrorSync } from '../../../helpers/errors'

const folder = perTestFolder()
const opened = folder.opened.bind(folder)

async function storedHeader(path: string) {
  return parseHeader(await readFile(path), path).header
}

describe('createOverlay', () => {
  it('makes a standalone overlay with ALL_ALLOCATED and a sparse image file', async () => {
    const steps: [number, number][] = []
    const result = await createOverlay({
      overlay: join(folder.dir, 'solo.add-cow'),
      size: 3 * 1024 * 1024 + 1,
      onProgress: (done, total) => steps.push([done, total]),
    })
    expect(steps).toEqual([
      [1, 3],
      [2, 3],
      [3, 3],
    ])
    expect(result).toMatchObject({
      image: join(folder.dir, 'solo.raw'),
      imageCreated: true,
      backing: null,
      backingFormat: null,
      clusterSize: 65536,
    })
    const header = await storedHeader(join(folder.dir, 'solo.add-cow'))
    expect(header).toMatchObject({
      backingName: null,
      backingFormat: null,
      imageName: 'solo.raw',
      compatibleFeatures: 1n,
    })
    const image = await stat(join(folder.dir, 'solo.raw'))
    expect(image.size).toBe(3 * 1024 * 1024 + 1)
    expect(image.blocks).toBe(0)
    expect((await stat(join(folder.dir, 'solo.add-cow'))).size).toBe(65536 * 2)
    const disk = (await opened(join(folder.dir, 'solo.add-cow'))) as AddCowDisk
    expect(disk.allAllocated).toBe(true)
    expect(result.trust).toEqual([
      { from: join(folder.dir, 'solo.add-cow'), to: join(folder.dir, 'solo.raw') },
    ])
    expect((await readdir(folder.dir)).sort()).toEqual(['solo.add-cow', 'solo.raw'])
  })

  it('stores names as given and the base format it finds', async () => {
    await mkdir(join(folder.dir, 'bases'))
    await mkdir(join(folder.dir, 'data'))
    await makeRaw(join(folder.dir, 'bases', 'base.raw'), 65536 * 3, 1)
    const result = await createOverlay({
      overlay: join(folder.dir, 'mid.add-cow'),
      backing: 'bases/base.raw',
      image: 'data/mid.img',
      clusterSize: 4096,
    })
    expect(result.size).toBe(65536 * 3)
    expect(result.backingFormat).toBe('raw')
    expect(await storedHeader(join(folder.dir, 'mid.add-cow'))).toMatchObject({
      backingName: 'bases/base.raw',
      backingFormat: 'raw',
      imageName: 'data/mid.img',
      clusterBits: 12,
      compatibleFeatures: 0n,
    })
    // An add-cow base is recorded as add-cow (probed), and trusted along with the image file.
    const top = await createOverlay({
      overlay: join(folder.dir, 'top.add-cow'),
      backing: 'mid.add-cow',
    })
    expect(top.backingFormat).toBe('add-cow')
    expect((await storedHeader(join(folder.dir, 'top.add-cow'))).backingFormat).toBe('add-cow')
    expect(top.trust.map((pair) => pair.to)).toEqual([
      join(folder.dir, 'top.raw'),
      join(folder.dir, 'mid.add-cow'),
    ])
  })

  it('refuses a wrong or lone base format', async () => {
    await makeRaw(join(folder.dir, 'base.raw'), 8192, 1)
    await expectEngineError(
      createOverlay({
        overlay: join(folder.dir, 'a.add-cow'),
        backing: 'base.raw',
        backingFormat: 'add-cow',
      }),
      'FORMAT_MISMATCH',
    )
    await expectEngineError(
      createOverlay({ overlay: join(folder.dir, 'a.add-cow'), backingFormat: 'raw', size: 4096 }),
      'BAD_ARGUMENT',
    )
    await expectEngineError(
      createOverlay({
        overlay: join(folder.dir, 'a.add-cow'),
        backing: 'base.raw',
        backingFormat: 'vmdk9',
      }),
      'UNSUPPORTED_FORMAT',
    )
    expect(await readdir(folder.dir)).toEqual(['base.raw'])
  })

  it('keeps an existing image file, growing it but never shrinking it', async () => {
    await makeRaw(join(folder.dir, 'base.raw'), 8192, 1)
    const existing = await makeRaw(join(folder.dir, 'keep.raw'), 4096, 2)
    const grown = await createOverlay({
      overlay: join(folder.dir, 'a.add-cow'),
      backing: 'base.raw',
      image: 'keep.raw',
      clusterSize: 4096,
    })
    expect(grown).toMatchObject({ imageCreated: false, size: 8192 })
    const content = await readFile(join(folder.dir, 'keep.raw'))
    expect(content.length).toBe(8192)
    expect(content.subarray(0, 4096).equals(existing)).toBe(true)
    // Larger than the base: the image file's length is the virtual size.
    await makeRaw(join(folder.dir, 'large.raw'), 20000, 3)
    expect(
      (
        await createOverlay({
          overlay: join(folder.dir, 'b.add-cow'),
          backing: 'base.raw',
          image: 'large.raw',
        })
      ).size,
    ).toBe(20000)
    const error = await expectEngineError(
      createOverlay({
        overlay: join(folder.dir, 'c.add-cow'),
        backing: 'base.raw',
        image: 'large.raw',
        size: 10000,
      }),
      'WOULD_SHRINK',
    )
    expect(error.message).toContain('20000')
    expect((await stat(join(folder.dir, 'large.raw'))).size).toBe(20000)
    // Without a base, an existing image file gives the size.
    expect(
      (await createOverlay({ overlay: join(folder.dir, 'd.add-cow'), image: 'large.raw' })).size,
    ).toBe(20000)
  })

  it('refuses bad names, sizes and clashes without leaving files behind', async () => {
    await makeRaw(join(folder.dir, 'base.raw'), 8192, 1)
    await writeFile(join(folder.dir, 'taken.add-cow'), 'x')
    const before = (await readdir(folder.dir)).sort()
    await expectEngineError(
      createOverlay({ overlay: join(folder.dir, 'taken.add-cow'), size: 4096 }),
      'ALREADY_EXISTS',
    )
    expect(await readFile(join(folder.dir, 'taken.add-cow'), 'utf8')).toBe('x')
    await expectEngineError(
      createOverlay({ overlay: join(folder.dir, 'n.add-cow') }),
      'BAD_ARGUMENT',
    )
    await expectEngineError(
      createOverlay({ overlay: join(folder.dir, 'n.add-cow'), image: '', size: 1 }),
      'BAD_ARGUMENT',
    )
    await expectEngineError(
      createOverlay({ overlay: join(folder.dir, 'n.add-cow'), backing: '' }),
      'BAD_ARGUMENT',
    )
    await expectEngineError(
      createOverlay({ overlay: join(folder.dir, 'n.add-cow'), size: -1 }),
      'BAD_ARGUMENT',
    )
    await expectEngineError(
      createOverlay({ overlay: join(folder.dir, 'n.add-cow'), size: 1.5 }),
      'BAD_ARGUMENT',
    )
    await expectEngineError(
      createOverlay({ overlay: join(folder.dir, 'n.add-cow'), size: 4096, clusterSize: 3000 }),
      'BAD_ARGUMENT',
    )
    await expectEngineError(
      createOverlay({ overlay: join(folder.dir, 'n.add-cow'), size: 4096, image: 'n.add-cow' }),
      'SAME_FILE',
    )
    await expectEngineError(
      createOverlay({
        overlay: join(folder.dir, 'n.add-cow'),
        backing: 'base.raw',
        image: 'base.raw',
      }),
      'SAME_FILE',
    )
    await symlink('base.raw', join(folder.dir, 'alias.raw'))
    await expectEngineError(
      createOverlay({
        overlay: join(folder.dir, 'n.add-cow'),
        backing: 'base.raw',
        image: 'alias.raw',
      }),
      'SAME_FILE',
    )
    await expectEngineError(
      createOverlay({ overlay: join(folder.dir, 'n.add-cow'), backing: 'n.add-cow' }),
      'NOT_FOUND',
    )
    await expectEngineError(
      createOverlay({ overlay: join(folder.dir, 'n.add-cow'), backing: 'missing.raw' }),
      'NOT_FOUND',
    )
    await mkdir(join(folder.dir, 'folder'))
    await expectEngineError(
      createOverlay({ overlay: join(folder.dir, 'n.add-cow'), image: 'folder', size: 4096 }),
      'BAD_ARGUMENT',
    )
    await expectEngineError(
      createOverlay({
        overlay: join(folder.dir, 'n.add-cow'),
        image: 'x'.repeat(70000),
        size: 4096,
      }),
      'BAD_ARGUMENT',
    )
    await expectEngineError(
      createOverlay({ overlay: join(folder.dir, 'n.add-cow'), size: 2 ** 50, clusterSize: 4096 }),
      'SIZE_LIMIT',
    )
    expect((await readdir(folder.dir)).sort()).toEqual([...before, 'alias.raw', 'folder'].sort())
  })

  it('can be cancelled, before or between its steps, leaving nothing behind', async () => {
    await makeRaw(join(folder.dir, 'base.raw'), 8192, 1)
    const early = new AbortController()
    early.abort()
    await expectEngineError(
      createOverlay({
        overlay: join(folder.dir, 'a.add-cow'),
        backing: 'base.raw',
        signal: early.signal,
      }),
      'ABORTED',
    )
    for (const step of [1, 2]) {
      const controller = new AbortController()
      await expectEngineError(
        createOverlay({
          overlay: join(folder.dir, 'a.add-cow'),
          backing: 'base.raw',
          signal: controller.signal,
          onProgress: (done) => done === step && controller.abort(),
        }),
        'ABORTED',
      )
      expect(await readdir(folder.dir)).toEqual(['base.raw'])
    }
  })

  it('follows the policy for the chain below the base', async () => {
    const outside = await tempDir()
    try {
      await makeRaw(join(outside.path, 'far.raw'), 8192, 1)
      await createOverlay({
        overlay: join(folder.dir, 'mid.add-cow'),
        backing: join(outside.path, 'far.raw'),
      })
      // mid names a file outside its folder; creating on top of it applies the policy to that name.
      await expectEngineError(
        createOverlay({ overlay: join(folder.dir, 'top.add-cow'), backing: 'mid.add-cow' }),
        'UNTRUSTED_NAME',
      )
    } finally {
      await outside.cleanup()
    }
  })

  it('names image files and checks cluster sizes', () => {
    expect(defaultImageName('/x/vm.add-cow')).toBe('vm.raw')
    expect(defaultImageName('vm.img')).toBe('vm.img.raw')
    expect(clusterBitsOf(4096)).toBe(12)
    expect(clusterBitsOf(2 * 1024 * 1024)).toBe(21)
    for (const size of [2048, 4 * 1024 * 1024, 12288, 0, Number.NaN])
      expectEngineErrorSync(() => clusterBitsOf(size), 'BAD_ARGUMENT')
  })
})
