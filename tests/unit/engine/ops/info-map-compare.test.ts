import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'

import { canListDataExtents } from '../../../../main/engine/formats/common/sparse'
import { compareDisks } from '../../../../main/engine/ops/compare'
import { createOverlay } from '../../../../main/engine/ops/create'
import { imageInfo } from '../../../../main/engine/ops/info'
import { mapImage } from '../../../../main/engine/ops/map'
import { makeRaw, makeSparse, pattern, perTestFolder } from '../../../helpers/images'
import { expectEngineError } from '../../../helpers/errors'

const folder = perTestFolder()
const opened = folder.opened.bind(folder)

describe('imageInfo, mapImage and compareDisks', () => {
  it('describe a raw file', async () => {
    await makeRaw(join(folder.dir, 'base.raw'), 12345, 1)
    expect(await imageInfo(join(folder.dir, 'base.raw'), { backingChain: true })).toEqual([
      {
        filename: join(folder.dir, 'base.raw'),
        format: 'raw',
        'virtual-size': 12345,
        'actual-size': expect.any(Number),
      },
    ])
    const raw = await opened(join(folder.dir, 'base.raw'), true)
    expect(await mapImage(raw)).toEqual([
      { start: 0, length: 12345, depth: 0, present: true, zero: false, data: true },
    ])
  })

  it('map an overlay without a base, and report progress', async () => {
    await createOverlay({
      overlay: join(folder.dir, 'solo.add-cow'),
      size: 8192,
      clusterSize: 4096,
    })
    const disk = await opened(join(folder.dir, 'solo.add-cow'))
    const progress: number[] = []
    // Nothing written: its image file is one hole, which reads as zeros (qemu-img map's
    // "zero": true, "data": false); without SEEK_DATA it counts as data.
    const listed = canListDataExtents()
    expect(await mapImage(disk, { onProgress: (done) => progress.push(done) })).toEqual([
      { start: 0, length: 8192, depth: 0, present: true, zero: listed, data: !listed },
    ])
    expect(progress).toEqual([8192])
    const cancelled = new AbortController()
    cancelled.abort()
    await expectEngineError(mapImage(disk, { signal: cancelled.signal }), 'ABORTED')
  })

  it('compare guest views, like qemu-img compare', async () => {
    const base = await makeRaw(join(folder.dir, 'base.raw'), 5 * 1024 * 1024, 1)
    await createOverlay({
      overlay: join(folder.dir, 'ov.add-cow'),
      backing: 'base.raw',
      size: 6 * 1024 * 1024,
    })
    await writeFile(join(folder.dir, 'copy.raw'), base)
    const overlay = await opened(join(folder.dir, 'ov.add-cow'))
    const copy = await opened(join(folder.dir, 'copy.raw'), true)
    // The overlay is larger, and its extra part reads as zeros: identical.
    expect(await compareDisks(overlay, copy)).toEqual({
      identical: true,
      firstDifference: null,
      sizes: [6 * 1024 * 1024, 5 * 1024 * 1024],
    })
    await overlay.write(4 * 1024 * 1024 + 77, Buffer.from([0]))
    expect((await compareDisks(copy, overlay)).firstDifference).toBe(
      base[4 * 1024 * 1024 + 77] === 0 ? null : 4 * 1024 * 1024 + 77,
    )
    await overlay.write(4 * 1024 * 1024 + 77, pattern(1, 1, 4 * 1024 * 1024 + 77))
    await overlay.write(6 * 1024 * 1024 - 1, Buffer.from([9]))
    expect(await compareDisks(overlay, copy)).toEqual({
      identical: false,
      firstDifference: 6 * 1024 * 1024 - 1,
      sizes: [6 * 1024 * 1024, 5 * 1024 * 1024],
    })
    const progress: [number, number][] = []
    const cancelled = new AbortController()
    await expectEngineError(
      compareDisks(copy, copy, {
        signal: cancelled.signal,
        onProgress: (done, total) => {
          progress.push([done, total])
          cancelled.abort()
        },
      }),
      'ABORTED',
    )
    expect(progress).toEqual([[4 * 1024 * 1024, 5 * 1024 * 1024]])
  })

  it('skip ranges both sides know to be zero', async () => {
    await createOverlay({ overlay: join(folder.dir, 'a.add-cow'), size: 64 * 1024 * 1024 })
    await makeSparse(join(folder.dir, 'zero.raw'), 4096)
    await createOverlay({
      overlay: join(folder.dir, 'b.add-cow'),
      backing: 'zero.raw',
      size: 64 * 1024 * 1024,
    })
    const a = await opened(join(folder.dir, 'a.add-cow'))
    const b = await opened(join(folder.dir, 'b.add-cow'))
    expect((await compareDisks(a, b)).identical).toBe(true)
    await b.write(60 * 1024 * 1024, Buffer.from([1]))
    expect((await compareDisks(a, b)).firstDifference).toBe(60 * 1024 * 1024)
  })
})
