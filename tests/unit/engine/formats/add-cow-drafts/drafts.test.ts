import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'

import { AddCowDisk } from '../../../../../main/engine/formats/add-cow/add-cow-disk'
import { imageInfo } from '../../../../../main/engine/ops/info'
import { mapImage } from '../../../../../main/engine/ops/map'
import { upgradeDraft } from '../../../../../main/engine/ops/upgrade'
import { openImage, probeFormat } from '../../../../../main/engine/open'
import { expectError } from '../../../../helpers/errors'
import { guestView as view, pattern } from '../../../../helpers/images'
import { tempDir } from '../../../../helpers/tools'
import {
  buildV12,
  buildV18,
  buildV3orV7,
  draftImageFile,
  expectedView,
} from '../../../../helpers/format-builders'

let dir: string
let cleanup: () => Promise<void>

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-drafts-'))
})
afterEach(async () => {
  await cleanup()
})

interface Fixture {
  layout: string
  unit: number
  size: number
  allocated: Set<number>
  build: () => Buffer
}

const SIZE = 300 * 1024 + 512
const BASE_SIZE = 200 * 1024

/** One fixture per layout; each keeps some units partly covering the new 64 KiB clusters. */
const FIXTURES: Fixture[] = [
  {
    layout: 'add-cow-v18',
    unit: 512,
    size: SIZE,
    allocated: new Set([0, 1, 5, 130, 131, 200, 600]),
    build() {
      return buildV18({
        clusterBits: 9,
        size: SIZE,
        backing: 'base.raw',
        backingFormat: 'raw',
        image: 'disk.raw',
        allocated: this.allocated,
      })
    },
  },
  {
    layout: 'add-cow-v12',
    unit: 65536,
    size: SIZE,
    allocated: new Set([0, 2, 4]),
    build() {
      return buildV12({
        size: SIZE,
        backing: 'base.raw',
        backingFormat: 'raw',
        image: 'disk.raw',
        allocated: this.allocated,
      })
    },
  },
  {
    layout: 'add-cow-v7',
    unit: 512,
    size: SIZE,
    allocated: new Set([0, 2, 3, 127, 128, 129, 500, 600]),
    build() {
      return buildV3orV7({
        layout: 'v7',
        size: SIZE,
        backing: 'base.raw',
        image: 'disk.raw',
        allocated: this.allocated,
      })
    },
  },
  {
    layout: 'add-cow-v3',
    unit: 512,
    size: SIZE,
    allocated: new Set([1, 9, 255, 256, 399, 600]),
    build() {
      return buildV3orV7({
        layout: 'v3',
        size: SIZE,
        backing: 'base.raw',
        image: 'disk.raw',
        allocated: this.allocated,
      })
    },
  },
]

async function writeFixture(
  fixture: Fixture,
): Promise<{ path: string; expected: Buffer; draft: Buffer }> {
  const base = pattern(BASE_SIZE, 11)
  const data = pattern(fixture.size, 12)
  await writeFile(join(dir, 'base.raw'), base)
  await writeFile(
    join(dir, 'disk.raw'),
    draftImageFile(fixture.size, fixture.unit, fixture.allocated, data),
  )
  const draft = fixture.build()
  const path = join(dir, 'disk.add-cow')
  await writeFile(path, draft)
  return {
    path,
    expected: expectedView(fixture.size, fixture.unit, fixture.allocated, data, base),
    draft,
  }
}

describe('earlier add-cow drafts', () => {
  for (const fixture of FIXTURES) {
    describe(fixture.layout, () => {
      it('is recognised, read through its chain, and shown by info and map', async () => {
        const { path, expected } = await writeFixture(fixture)
        expect(await probeFormat(path)).toBe(fixture.layout)
        expect((await view(path)).equals(expected)).toBe(true)
        const [info] = await imageInfo(path)
        expect(info?.format).toBe(fixture.layout)
        expect(info?.['allocated-clusters']).toBe(fixture.allocated.size)
        expect(info?.['data-file']).toBe('disk.raw')
        expect(info?.['backing-filename']).toBe('base.raw')
        expect(info?.warnings?.[0]).toMatch(
          /earlier add-cow draft layout .*upgrade with addcow amend --upgrade/,
        )
        const disk = await openImage(path, { readOnly: true })
        try {
          const map = await mapImage(disk)
          const first = [...fixture.allocated].sort((a, b) => a - b)[0]!
          const depth0 = map.filter((extent) => extent.depth === 0 && extent.present)
          expect(depth0.some((extent) => extent.start === first * fixture.unit)).toBe(true)
          // Unallocated ranges past the base's end read as zeros at depth 0, as qemu-img map
          // reports them (the layer whose backing file is too short).
          expect(
            map.some(
              (extent) =>
                extent.depth === 0 &&
                !extent.present &&
                extent.zero &&
                extent.start + extent.length > BASE_SIZE,
            ),
          ).toBe(true)
        } finally {
          await disk.close()
        }
      })

      it('is never opened for writing', async () => {
        const { path } = await writeFixture(fixture)
        await expectError(
          openImage(path, { readOnly: false }),
          'NOT_CAPABLE',
          /never writes; upgrade it with: addcow amend --upgrade/,
        )
      })

      it('upgrades in place to the current layout with the same guest view', async () => {
        const { path, expected, draft } = await writeFixture(fixture)
        const result = await upgradeDraft({ path, keepOld: true })
        expect(result.layout).toBe(fixture.layout)
        expect(result.clusterSize).toBe(65536)
        expect(await probeFormat(path)).toBe('add-cow')
        expect((await view(path)).equals(expected)).toBe(true)
        // The old layout is kept byte for byte, and the new file follows FORMATS.md §1.
        expect((await readFile(`${path}.old`)).equals(draft)).toBe(true)
        const disk = await openImage(path, { readOnly: true })
        try {
          expect(disk).toBeInstanceOf(AddCowDisk)
          const addCow = disk as AddCowDisk
          expect(addCow.header.backingName).toBe('base.raw')
          expect(addCow.header.backingFormat).toBe('raw')
          expect(addCow.header.imageName).toBe('disk.raw')
          const clusters = new Set(
            [...fixture.allocated].map((unit) => Math.floor((unit * fixture.unit) / 65536)),
          )
          expect(addCow.allocatedClusters).toBe(clusters.size)
          for (const cluster of clusters) expect(addCow.isAllocated(cluster)).toBe(true)
          expect((await stat(path)).size).toBe(addCow.geometry.fileLength)
        } finally {
          await disk.close()
        }
        expect(result.filledClusters).toBe(
          fixture.unit < 65536
            ? new Set([...fixture.allocated].map((unit) => Math.floor((unit * 512) / 65536))).size
            : 0,
        )
      })

      it('upgrades to a new file with 4 KiB clusters and leaves the draft untouched', async () => {
        const { path, expected, draft } = await writeFixture(fixture)
        const output = join(dir, 'sub', '..', 'new.add-cow')
        const result = await upgradeDraft({ path, output, clusterSize: 4096 })
        expect(result.backup).toBeNull()
        expect((await readFile(path)).equals(draft)).toBe(true)
        expect((await view(result.path)).equals(expected)).toBe(true)
        // The draft still shows the same guest view (the fills only touched ranges it reads from the base).
        expect((await view(path)).equals(expected)).toBe(true)
        await expectError(upgradeDraft({ path, output }), 'ALREADY_EXISTS', /already exists/)
      })
    })
  }

  it('V18 files that the current rules accept are current add-cow files', async () => {
    await writeFile(
      join(dir, 'disk.add-cow'),
      buildV18({
        clusterBits: 12,
        size: 8192,
        image: 'disk.raw',
        allocated: new Set(),
        allAllocated: true,
      }),
    )
    expect(await probeFormat(join(dir, 'disk.add-cow'))).toBe('add-cow')
    // A format field without a NUL is V18 only (the current layout refuses it).
    await writeFile(
      join(dir, 'v18.add-cow'),
      buildV18({
        clusterBits: 16,
        size: 8192,
        image: 'disk.raw',
        imageFormat: 'raw'.padEnd(16, 'r'),
        allocated: new Set(),
      }),
    )
    expect(await probeFormat(join(dir, 'v18.add-cow'))).toBe('add-cow-v18')
  })

  it('a V18 file with ALL_ALLOCATED cut to its header is refused: the bitmap bound holds without the bitmap', async () => {
    await writeFile(join(dir, 'disk.raw'), Buffer.alloc(8192))
    // 512-byte clusters are V18 only.
    const file = buildV18({
      clusterBits: 9,
      size: 8192,
      image: 'disk.raw',
      allocated: new Set(),
      allAllocated: true,
    })
    await writeFile(join(dir, 'v18.add-cow'), file.subarray(0, 4096))
    expect(await probeFormat(join(dir, 'v18.add-cow'))).toBe('add-cow-v18')
    await expectError(
      openImage(join(dir, 'v18.add-cow'), { readOnly: true }),
      'CORRUPT_IMAGE',
      /is 4096 bytes long, too short for its 2-byte allocation bitmap at offset 4096\./,
    )
    // Whole, it opens and reads its image file.
    await writeFile(join(dir, 'v18.add-cow'), file)
    const disk = await openImage(join(dir, 'v18.add-cow'), { readOnly: true })
    expect(disk.isAllAllocated?.()).toBe(true)
    await disk.close()
  })

  it('a cancelled upgrade leaves the draft, its view and the folder as they were', async () => {
    const fixture = FIXTURES[2]!
    const { path, expected, draft } = await writeFixture(fixture)
    const controller = new AbortController()
    await expectError(
      upgradeDraft({ path, signal: controller.signal, onProgress: () => controller.abort() }),
      'ABORTED',
      /upgrade was cancelled/,
    )
    expect((await readFile(path)).equals(draft)).toBe(true)
    expect((await view(path)).equals(expected)).toBe(true)
    expect((await readdir(dir)).sort()).toEqual(['base.raw', 'disk.add-cow', 'disk.raw'])
  })

  it('grows a v3 image file shorter than the recorded size, and refuses a longer one', async () => {
    const allocated = new Set([0, 1])
    await writeFile(join(dir, 'disk.raw'), pattern(1024, 1))
    await writeFile(
      join(dir, 'disk.add-cow'),
      buildV3orV7({ layout: 'v3', size: 10_000, image: 'disk.raw', allocated }),
    )
    const before = await view(join(dir, 'disk.add-cow'))
    expect(before.length).toBe(10_000)
    const [info] = await imageInfo(join(dir, 'disk.add-cow'))
    expect(info?.warnings?.join('\n')).toMatch(
      /image file is 1024 bytes long but the header records a virtual size of 10000/,
    )
    await upgradeDraft({ path: join(dir, 'disk.add-cow') })
    expect((await stat(join(dir, 'disk.raw'))).size).toBe(10_000)
    expect((await view(join(dir, 'disk.add-cow'))).equals(before)).toBe(true)

    await writeFile(join(dir, 'long.raw'), pattern(20_000, 1))
    await writeFile(
      join(dir, 'long.add-cow'),
      buildV3orV7({ layout: 'v3', size: 10_000, image: 'long.raw', allocated }),
    )
    await expectError(
      upgradeDraft({ path: join(dir, 'long.add-cow') }),
      'NOT_CAPABLE',
      /longer than the 10000-byte virtual size/,
    )
  })

  it('refuses to upgrade files that are not drafts', async () => {
    await writeFile(join(dir, 'plain.raw'), Buffer.alloc(4096))
    await expectError(
      upgradeDraft({ path: join(dir, 'plain.raw') }),
      'BAD_ARGUMENT',
      /is a raw file, not an earlier add-cow draft/,
    )
  })

  describe('hostile headers', () => {
    const image = (): Promise<void> => writeFile(join(dir, 'disk.raw'), Buffer.alloc(131072))
    const cases: [string, string, () => Buffer, string, RegExp][] = [
      [
        'V12 unknown feature',
        'add-cow-v12',
        () => buildV12({ size: 131072, image: 'disk.raw', features: 2n, allocated: new Set() }),
        'UNSUPPORTED_FEATURE',
        /features 0x2/,
      ],
      [
        'V12 zero header pages',
        'add-cow-v12',
        () => {
          const file = buildV12({ size: 131072, image: 'disk.raw', allocated: new Set() })
          file.writeUInt32LE(0, 44)
          return file
        },
        'CORRUPT_HEADER',
        /header pages 0/,
      ],
      [
        'V12 huge header pages',
        'add-cow-v12',
        () => {
          const file = buildV12({ size: 131072, image: 'disk.raw', allocated: new Set() })
          file.writeUInt32LE(0xffffffff, 44)
          return file
        },
        'CORRUPT_HEADER',
        /header pages 4294967295/,
      ],
      [
        'V12 image name inside the fixed header',
        'add-cow-v12',
        () => {
          const file = buildV12({ size: 131072, image: 'disk.raw', allocated: new Set() })
          file.writeUInt32LE(40, 20)
          return file
        },
        'CORRUPT_HEADER',
        /image name offset 40/,
      ],
      [
        'V12 image name past the header',
        'add-cow-v12',
        () => {
          const file = buildV12({ size: 131072, image: 'disk.raw', allocated: new Set() })
          file.writeUInt32LE(0xfffffff0, 24)
          return file
        },
        'CORRUPT_HEADER',
        /image name length 4294967280/,
      ],
      [
        'V12 binary backing format',
        'add-cow-v12',
        () =>
          buildV12({
            size: 131072,
            backing: 'base.raw',
            backingFormat: 'r\x01w',
            image: 'disk.raw',
            allocated: new Set(),
          }),
        'CORRUPT_HEADER',
        /backing format/,
      ],
      [
        'V12 qcow2 image file',
        'add-cow-v12',
        () =>
          buildV12({ size: 131072, image: 'disk.raw', imageFormat: 'qcow2', allocated: new Set() }),
        'UNSUPPORTED_FORMAT',
        /Image format 'qcow2'/,
      ],
      [
        'V12 bitmap past the end',
        'add-cow-v12',
        () => buildV12({ size: 131072, image: 'disk.raw', allocated: new Set() }).subarray(0, 4096),
        'CORRUPT_IMAGE',
        /too short for its 1-byte allocation bitmap/,
      ],
      [
        'v7 dirty reserved area',
        'add-cow-v7',
        () => {
          const file = buildV3orV7({
            layout: 'v7',
            size: 131072,
            image: 'disk.raw',
            allocated: new Set(),
          })
          file[2100] = 1
          return file
        },
        'CORRUPT_HEADER',
        /reserved byte at offset 2100/,
      ],
      [
        'v3 unterminated image name',
        'add-cow-v3',
        () => {
          const file = buildV3orV7({
            layout: 'v3',
            size: 131072,
            image: 'disk.raw',
            allocated: new Set(),
          })
          file.fill(0x61, 1036, 2060)
          return file
        },
        'CORRUPT_HEADER',
        /image file .* no NUL terminator/,
      ],
      [
        'v3 huge size',
        'add-cow-v3',
        () => {
          const file = buildV3orV7({
            layout: 'v3',
            size: 131072,
            image: 'disk.raw',
            allocated: new Set(),
          })
          file.writeBigUInt64BE(2n ** 60n, 2060)
          return file
        },
        'SIZE_LIMIT',
        /size/,
      ],
      [
        'v3 bitmap past the end',
        'add-cow-v3',
        () => {
          const file = buildV3orV7({
            layout: 'v3',
            size: 131072,
            image: 'disk.raw',
            allocated: new Set(),
          })
          file.writeBigUInt64BE(2n ** 40n, 2060)
          return file
        },
        'CORRUPT_IMAGE',
        /too short for its .* allocation bitmap/,
      ],
      [
        'V18 cluster_bits 8',
        'add-cow-v18',
        () => buildV18({ clusterBits: 8, size: 131072, image: 'disk.raw', allocated: new Set() }),
        'CORRUPT_HEADER',
        /cluster_bits 8 .* 9\.\.21/,
      ],
      [
        'V18 image name to /etc/passwd',
        'add-cow-v18',
        () =>
          buildV18({ clusterBits: 9, size: 131072, image: '/etc/passwd', allocated: new Set() }),
        'UNTRUSTED_NAME',
        /Refusing to open the image file '\/etc\/passwd'/,
      ],
    ]
    for (const [name, format, build, code, text] of cases) {
      it(`refuses ${name}`, async () => {
        await image()
        await writeFile(join(dir, 'bad.add-cow'), build())
        await expectError(
          openImage(join(dir, 'bad.add-cow'), { format, readOnly: true }),
          code,
          text,
        )
      })
    }

    it('a damaged big-endian draft still probes, so the open names the fault', async () => {
      await image()
      const file = buildV3orV7({
        layout: 'v3',
        size: 131072,
        image: 'disk.raw',
        allocated: new Set(),
      })
      file.writeBigUInt64BE(2n ** 40n, 2060)
      await writeFile(join(dir, 'bad.add-cow'), file)
      expect(await probeFormat(join(dir, 'bad.add-cow'))).toBe('add-cow-v3')
      await expectError(
        openImage(join(dir, 'bad.add-cow'), { readOnly: true }),
        'CORRUPT_IMAGE',
        /allocation bitmap/,
      )
    })
  })
})

describe('a draft whose image file is its base (issue 13 item 5)', () => {
  it('is refused by the strict open and shown by info, the base not followed', async () => {
    await writeFile(join(dir, 'same.raw'), pattern(65536, 4))
    await writeFile(
      join(dir, 'same.add-cow'),
      buildV12({
        size: 65536,
        backing: 'same.raw',
        backingFormat: 'raw',
        image: 'same.raw',
        allocated: new Set(),
      }),
    )
    await expectError(
      openImage(join(dir, 'same.add-cow'), { readOnly: true }),
      'SAME_FILE',
      /are the same file/,
    )
    const [info] = await imageInfo(join(dir, 'same.add-cow'), { backingChain: true })
    expect(info?.names?.map((name) => [name.stored, name.followed, name.reason])).toEqual([
      ['same.raw', false, 'same-file'],
      ['same.raw', true, 'inside-folder'],
    ])
    expect(info?.warnings).toContain("the name 'same.raw' would not be followed (same-file)")
  })
})
