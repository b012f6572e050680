import { mkdir, open } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { Disk } from '../../../main/engine/disk'
import { chainOf, MAX_CHAIN_DEPTH, openImage } from '../../../main/engine/open'
import { createOverlay } from '../../../main/engine/ops/create'
import { imageInfo } from '../../../main/engine/ops/info'
import { mapImage } from '../../../main/engine/ops/map'
import { tempDir } from '../../helpers/tools'
import { makeRaw, makeSparse, pattern, writeAddCow } from '../../helpers/images'
import { expectEngineError } from '../../helpers/errors'

const C = 4096
let cleanup: (() => Promise<void>) | null = null
let disk: Disk | null = null

afterEach(async () => {
  await disk?.close()
  disk = null
  await cleanup?.()
  cleanup = null
})

async function folder(): Promise<string> {
  const made = await tempDir()
  cleanup = made.cleanup
  return made.path
}

/**
 * A chain of `layers` files in `root`: l0.add-cow on l1.add-cow ... on a raw base (the last
 * layer). Add-cow layer i holds cluster i, filled with pattern(C, 100 + i).
 */
async function buildChain(root: string, layers: number, size = 64 * C): Promise<string> {
  const bottom = layers - 1
  await makeRaw(join(root, 'base.raw'), size, 1)
  for (let layer = bottom - 1; layer >= 0; layer--) {
    const bitmap = new Uint8Array(Math.ceil(size / C / 8))
    bitmap[layer >> 3] = 1 << (layer & 7)
    await writeAddCow({
      path: join(root, `l${layer}.add-cow`),
      imageName: `l${layer}.raw`,
      backingName: layer === bottom - 1 ? 'base.raw' : `l${layer + 1}.add-cow`,
      backingFormat: layer === bottom - 1 ? 'raw' : 'add-cow',
      clusterBits: 12,
      size,
      bitmap,
    })
    const image = await open(join(root, `l${layer}.raw`), 'w')
    await image.truncate(size)
    await image.write(pattern(C, 100 + layer), 0, C, layer * C)
    await image.close()
  }
  return join(root, 'l0.add-cow')
}

describe('chains', () => {
  it('reads add-cow over add-cow over raw, layer by layer', async () => {
    const root = await folder()
    const base = await makeRaw(join(root, 'base.raw'), 8 * C, 1)
    await createOverlay({ overlay: join(root, 'mid.add-cow'), backing: 'base.raw', clusterSize: C })
    await createOverlay({
      overlay: join(root, 'top.add-cow'),
      backing: 'mid.add-cow',
      clusterSize: C,
      size: 10 * C,
    })
    const mid = await openImage(join(root, 'mid.add-cow'))
    await mid.write(C, pattern(C, 2))
    await mid.write(3 * C + 5, pattern(10, 3))
    await mid.close()
    disk = await openImage(join(root, 'top.add-cow'))
    expect(chainOf(disk).map((layer) => layer.format)).toEqual(['add-cow', 'add-cow', 'raw'])
    expect(disk.backing?.format).toBe('add-cow')
    await disk.write(3 * C, pattern(2, 4))
    const model = Buffer.alloc(10 * C)
    base.copy(model)
    pattern(C, 2).copy(model, C)
    pattern(10, 3).copy(model, 3 * C + 5)
    pattern(2, 4).copy(model, 3 * C)
    expect((await disk.read(0, 10 * C)).equals(model)).toBe(true)
    expect(await mapImage(disk)).toEqual([
      { start: 0, length: C, depth: 2, present: true, zero: false, data: true },
      { start: C, length: C, depth: 1, present: true, zero: false, data: true },
      { start: 2 * C, length: C, depth: 2, present: true, zero: false, data: true },
      { start: 3 * C, length: C, depth: 0, present: true, zero: false, data: true },
      { start: 4 * C, length: 4 * C, depth: 2, present: true, zero: false, data: true },
      // Past the middle layer's end: zeros, reported at the top layer as qemu-img map does.
      { start: 8 * C, length: 2 * C, depth: 0, present: false, zero: true, data: false },
    ])
  })

  it(`opens a chain of ${MAX_CHAIN_DEPTH} layers and reads from every one`, async () => {
    const root = await folder()
    disk = await openImage(await buildChain(root, MAX_CHAIN_DEPTH))
    const layers = chainOf(disk)
    expect(layers).toHaveLength(MAX_CHAIN_DEPTH)
    expect(layers[MAX_CHAIN_DEPTH - 1]!.format).toBe('raw')
    for (let layer = 0; layer < MAX_CHAIN_DEPTH - 1; layer++) {
      expect(
        (await disk.read(layer * C, C)).equals(pattern(C, 100 + layer)),
        `cluster ${layer}`,
      ).toBe(true)
    }
    expect((await disk.read(63 * C, C)).equals(pattern(64 * C, 1).subarray(63 * C))).toBe(true)
    const status = await disk.blockStatus(0, 64 * C)
    expect(status.map((extent) => extent.depth)).toEqual([...Array(MAX_CHAIN_DEPTH).keys()])
  })

  it(`refuses a chain of ${MAX_CHAIN_DEPTH + 1} layers`, async () => {
    const root = await folder()
    const top = await buildChain(root, MAX_CHAIN_DEPTH + 1)
    const error = await expectEngineError(openImage(top), 'CHAIN_TOO_DEEP')
    expect(error.message).toContain(`deeper than ${MAX_CHAIN_DEPTH}`)
    expect(error.path).toBe(join(root, `l${MAX_CHAIN_DEPTH - 1}.add-cow`))
    // The layers that did open were closed again: the same chain opens from one layer down.
    disk = await openImage(join(root, 'l1.add-cow'))
    expect(chainOf(disk)).toHaveLength(MAX_CHAIN_DEPTH)
  })

  it("resolves relative names against the add-cow file's folder, not the working directory", async () => {
    const root = await folder()
    await mkdir(join(root, 'vm', 'bases'), { recursive: true })
    await mkdir(join(root, 'vm', 'data'))
    const base = await makeRaw(join(root, 'vm', 'bases', 'base.raw'), 4 * C, 5)
    await createOverlay({
      overlay: join(root, 'vm', 'disk.add-cow'),
      backing: 'bases/base.raw',
      image: 'data/disk.raw',
      clusterSize: C,
    })
    expect(process.cwd()).not.toBe(join(root, 'vm'))
    disk = await openImage(join(root, 'vm', 'disk.add-cow'))
    expect(disk.backing?.path).toBe(join(root, 'vm', 'bases', 'base.raw'))
    expect((await disk.read(0, 4 * C)).equals(base)).toBe(true)
    const [info] = await imageInfo(join(root, 'vm', 'disk.add-cow'))
    expect(info?.['backing-filename']).toBe('bases/base.raw')
    expect(info?.['data-file']).toBe('data/disk.raw')
    expect(info?.['full-data-file']).toBe(join(root, 'vm', 'data', 'disk.raw'))
  })

  it('info walks the chain, and shows refused names without following them', async () => {
    const root = await folder()
    const outside = await folder2()
    await makeSparse(join(outside, 'secret.raw'), 3 * C)
    await makeRaw(join(root, 'base.raw'), 4 * C, 1)
    await createOverlay({ overlay: join(root, 'mid.add-cow'), backing: 'base.raw', clusterSize: C })
    await createOverlay({
      overlay: join(root, 'top.add-cow'),
      backing: 'mid.add-cow',
      clusterSize: C,
    })
    const chain = await imageInfo(join(root, 'top.add-cow'), { backingChain: true })
    expect(chain.map((info) => info.format)).toEqual(['add-cow', 'add-cow', 'raw'])
    expect(chain.map((info) => info['virtual-size'])).toEqual([4 * C, 4 * C, 4 * C])

    // An overlay whose names lead out of its folder: info shows them and follows neither.
    await writeAddCow({
      path: join(root, 'stray.add-cow'),
      imageName: join(outside, 'secret.raw'),
      backingName: '../etc/base.raw',
      size: 3 * C,
      clusterBits: 12,
    })
    const [stray, ...below] = await imageInfo(join(root, 'stray.add-cow'), { backingChain: true })
    expect(below).toEqual([])
    expect(stray?.names?.map((name) => [name.stored, name.followed, name.reason])).toEqual([
      ['../etc/base.raw', false, 'missing'],
      [join(outside, 'secret.raw'), false, 'outside-folder'],
    ])
    expect(stray?.['virtual-size']).toBe(3 * C)
    expect(stray?.warnings?.length).toBe(2)
    // Reading through it is refused, naming the file.
    await expectEngineError(openImage(join(root, 'stray.add-cow')), 'UNTRUSTED_NAME')
  })
})

let second: (() => Promise<void>) | null = null
afterEach(async () => {
  await second?.()
  second = null
})

async function folder2(): Promise<string> {
  const made = await tempDir()
  second = made.cleanup
  return made.path
}
