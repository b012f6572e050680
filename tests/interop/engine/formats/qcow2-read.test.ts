import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { MapExtent } from '../../../../shared/image-types'
import { Qcow2Disk } from '../../../../main/engine/formats/qcow2/qcow2-disk'
import { mapImage } from '../../../../main/engine/ops/map'
import { openImage } from '../../../../main/engine/open'
import { addcow } from '../../../helpers/cli'
import { requireTools, tempDir, tool, toolStatus } from '../../../helpers/tools'
import { makeVariants, qemuView, VARIANTS, type Variant } from './qcow2-images'

const available = requireTools('qemu-img', 'qemu-io')

/** Extents merged by (depth, present, zero), the part of a map both tools agree on. */
function normalise(
  extents: Pick<MapExtent, 'start' | 'length' | 'depth' | 'present' | 'zero'>[],
): string[] {
  const merged: {
    start: number
    length: number
    depth: number
    present: boolean
    zero: boolean
  }[] = []
  for (const { start, length, depth, present, zero } of extents) {
    const last = merged.at(-1)
    if (
      last &&
      last.depth === depth &&
      last.present === present &&
      last.zero === zero &&
      last.start + last.length === start
    ) {
      last.length += length
    } else {
      merged.push({ start, length, depth, present, zero })
    }
  }
  return merged.map(
    (extent) =>
      `${extent.start}+${extent.length} depth=${extent.depth} present=${extent.present} zero=${extent.zero}`,
  )
}

describe.skipIf(!available)('qcow2 images made by qemu-img, read through the engine', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let paths: Record<Variant, string>

  beforeAll(async () => {
    ;({ path: dir, cleanup } = await tempDir('addcow-qcow2-read-'))
    paths = await makeVariants(dir)
  })
  afterAll(async () => {
    await cleanup()
  })

  for (const variant of VARIANTS) {
    it(`${variant}: the guest view equals qemu-img convert -O raw`, async () => {
      const expected = await qemuView(paths[variant])
      const disk = await openImage(paths[variant], { readOnly: true })
      try {
        expect(disk).toBeInstanceOf(Qcow2Disk)
        expect(disk.size).toBe(expected.length)
        expect((await disk.read(0, disk.size)).equals(expected)).toBe(true)
        // Unaligned pieces crossing cluster and subcluster boundaries.
        for (const [offset, length] of [
          [511, 70_000],
          [100 * 1024 - 3, 9000],
          [1024 * 1024 - 100, 200_000],
          [disk.size - 5000, 5000],
        ] as const) {
          expect(
            (await disk.read(offset, length)).equals(expected.subarray(offset, offset + length)),
          ).toBe(true)
        }
      } finally {
        await disk.close()
      }
    })
  }

  const qcow2Only: Variant[] = [
    'v2',
    'v3',
    'deflate',
    'zstd',
    'extended-l2',
    'chain-top',
    'zero-clusters',
    'small-clusters',
    'snapshot',
  ]
  for (const variant of qcow2Only) {
    it(`${variant}: blockStatus agrees with qemu-img map on depth, presence and zeros`, async () => {
      const theirs = JSON.parse(
        await tool('qemu-img', ['map', '--output=json', paths[variant]]),
      ) as MapExtent[]
      const disk = await openImage(paths[variant], { readOnly: true })
      try {
        expect(normalise(await mapImage(disk))).toEqual(normalise(theirs))
      } finally {
        await disk.close()
      }
    })
  }

  it('the CLI shows a qcow2 chain with info --backing-chain and map --json', async () => {
    const dataDir = join(dir, 'data')
    const info = await addcow(['info', '--json', '--backing-chain', paths['chain-top']], {
      dataDir,
    })
    expect(info.stderr).toBe('')
    const layers = JSON.parse(info.stdout) as {
      format: string
      'backing-filename-format'?: string
      'cluster-size': number
    }[]
    expect(layers.map((layer) => layer.format)).toEqual(['qcow2', 'qcow2', 'qcow2'])
    expect(layers[0]?.['backing-filename-format']).toBe('qcow2')
    expect(layers[0]?.['cluster-size']).toBe(32768)
    const map = await addcow(['map', '--json', paths['chain-top']], { dataDir })
    const theirs = JSON.parse(
      await tool('qemu-img', ['map', '--output=json', paths['chain-top']]),
    ) as MapExtent[]
    expect(normalise(JSON.parse(map.stdout) as MapExtent[])).toEqual(normalise(theirs))
    const compare = await addcow(
      ['compare', paths['chain-top'], `${paths['chain-top']}.expected.raw`],
      { dataDir },
    )
    expect(compare.stdout).toMatch(/identical/)
  })

  it('refuses an encrypted image made by qemu-img, naming the method', async () => {
    const path = join(dir, 'secret.qcow2')
    // The legacy AES method is quick to create; LUKS (method 2) is covered by the unit tests.
    await tool('qemu-img', [
      'create',
      '-q',
      '--object',
      'secret,id=sec0,data=hunter2',
      '-f',
      'qcow2',
      '-o',
      'encrypt.format=aes,encrypt.key-secret=sec0',
      path,
      '1M',
    ])
    await expect(openImage(path, { readOnly: true })).rejects.toMatchObject({
      code: 'UNSUPPORTED_FEATURE',
      message: expect.stringMatching(/encrypted qcow2 image \(crypt_method 1, AES\)/),
    })
  })

  it('refuses an external data file made by qemu-img', async () => {
    const path = join(dir, 'external.qcow2')
    await tool('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      `data_file=${join(dir, 'external.data')}`,
      path,
      '1M',
    ])
    await expect(openImage(path, { readOnly: true })).rejects.toMatchObject({
      code: 'UNSUPPORTED_FEATURE',
      message: expect.stringMatching(/external data file/),
    })
  })

  it('damaged copies of qemu-img images give clear errors, never a crash or a hang', async () => {
    const source = await readFile(paths.deflate)
    const l1Offset = Number(source.readBigUInt64BE(40))
    const l2Offset = Number(source.readBigUInt64BE(l1Offset) & 0x00fffffffffffe00n)
    const damages: [string, (file: Buffer) => void, RegExp][] = [
      ['l1_size', (file) => file.writeUInt32BE(0xffffffff, 36), /l1_size 4294967295/],
      [
        'L1 entry',
        (file) => file.writeBigUInt64BE(0x00ffffffffff0000n, l1Offset),
        /L2 table offset .* past the end/,
      ],
      [
        'every L2 entry',
        (file) => file.fill(0x5a, l2Offset, l2Offset + 65536),
        /(cluster offset|cannot be decompressed)/,
      ],
      [
        'backing name',
        (file) => (file.writeBigUInt64BE(4000n, 8), file.writeUInt32BE(0xffff, 16)),
        /backing_file_size 65535/,
      ],
    ]
    for (const [name, damage, text] of damages) {
      const copy = Buffer.from(source)
      damage(copy)
      const path = join(dir, `damaged-${name.replace(/\W/g, '-')}.qcow2`)
      await writeFile(path, copy)
      const failure = await (async () => {
        const disk = await openImage(path, { readOnly: true })
        try {
          await disk.read(0, disk.size)
        } finally {
          await disk.close()
        }
      })().then(
        () => null,
        (error: unknown) => error,
      )
      expect(failure, name).toMatchObject({
        name: 'EngineError',
        message: expect.stringMatching(text),
      })
      // qemu-img agrees that these files are damaged.
      expect((await toolStatus('qemu-img', ['check', path])).code, name).not.toBe(0)
    }
  })
})
