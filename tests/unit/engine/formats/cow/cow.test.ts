import { readFile, stat, utimes, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'

import { createCow } from '../../../../../main/engine/formats/cow/cow-disk'
import { imageInfo } from '../../../../../main/engine/ops/info'
import { mapImage } from '../../../../../main/engine/ops/map'
import { openImage, probeFormat } from '../../../../../main/engine/open'
import { expectError } from '../../../../helpers/errors'
import { tempDir } from '../../../../helpers/tools'
import { buildQemuCow, buildUmlCow, expectedView } from '../../../../helpers/format-builders'
import { pattern } from '../../../../helpers/images'

let dir: string
let cleanup: () => Promise<void>

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-cow-'))
})
afterEach(async () => {
  await cleanup()
})

const SIZE = 64 * 1024 + 1536 // 131 sectors: a partial last bitmap byte
const ALLOCATED = new Set([0, 1, 7, 8, 9, 64, 100, 130])

describe('QEMU cow version 2', () => {
  it('reads a file built byte by byte from FORMATS.md, over a raw base shorter than the disk', async () => {
    const base = pattern(40 * 1024, 1)
    const data = pattern(SIZE, 2)
    await writeFile(join(dir, 'base.raw'), base)
    const mtime = Math.floor((await stat(join(dir, 'base.raw'))).mtimeMs / 1000)
    await writeFile(
      join(dir, 'disk.cow'),
      buildQemuCow({ size: SIZE, backing: 'base.raw', mtime, data, allocated: ALLOCATED }),
    )
    expect(await probeFormat(join(dir, 'disk.cow'))).toBe('cow')
    const disk = await openImage(join(dir, 'disk.cow'), { readOnly: true })
    try {
      expect(disk.format).toBe('cow')
      expect(disk.size).toBe(SIZE)
      expect(disk.allocationUnit).toBe(512)
      expect(
        (await disk.read(0, SIZE)).equals(expectedView(SIZE, 512, ALLOCATED, data, base)),
      ).toBe(true)
      // An unaligned read across allocated and unallocated sectors.
      expect(
        (await disk.read(3500, 2000)).equals(
          expectedView(SIZE, 512, ALLOCATED, data, base).subarray(3500, 5500),
        ),
      ).toBe(true)
      const map = await mapImage(disk)
      expect(map[0]).toMatchObject({ start: 0, length: 1024, depth: 0, present: true })
      expect(map[1]).toMatchObject({ start: 1024, length: 5 * 512, depth: 1, present: true })
      // Past the base's end the unallocated sectors read as zeros at depth 0 (as qemu-img map).
      expect(map.at(-2)).toMatchObject({ depth: 0, present: false, zero: true })
      const info = await disk.info()
      expect(info['allocated-clusters']).toBe(ALLOCATED.size)
      expect(info['backing-filename']).toBe('base.raw')
      expect(info['backing-filename-format']).toBe('raw')
      expect(info.warnings ?? []).toEqual([])
    } finally {
      await disk.close()
    }
  })

  it('warns when the backing file mtime differs from the recorded one', async () => {
    await writeFile(join(dir, 'base.raw'), pattern(4096, 3))
    await utimes(join(dir, 'base.raw'), 1_600_000_000, 1_600_000_000)
    await writeFile(
      join(dir, 'disk.cow'),
      buildQemuCow({
        size: 4096,
        backing: 'base.raw',
        mtime: 1_500_000_000,
        data: Buffer.alloc(4096),
        allocated: new Set(),
      }),
    )
    const [info] = await imageInfo(join(dir, 'disk.cow'))
    expect(info?.warnings?.join('\n')).toMatch(/mtime .* differs from the one recorded/)
  })

  it('writes: partial sectors are filled from the base, and the bitmap follows the data', async () => {
    const base = pattern(SIZE, 4)
    await writeFile(join(dir, 'base.raw'), base)
    const created = await createCow({ path: join(dir, 'new.cow'), backing: 'base.raw' })
    expect(created.size).toBe(SIZE)
    const raw = await readFile(join(dir, 'new.cow'))
    // Header (with its padding) and a zero bitmap; the data area is not written yet.
    expect(raw.length).toBe(1056 + Math.ceil(Math.ceil(SIZE / 512) / 8))
    expect(raw.readUInt32BE(0)).toBe(0x4f4f4f4d)
    expect(raw.readUInt32BE(4)).toBe(2)
    expect(raw.subarray(8, 16).toString('latin1')).toBe('base.raw')
    expect(raw.readInt32BE(1032)).toBe(
      Math.floor((await stat(join(dir, 'base.raw'))).mtimeMs / 1000),
    )
    expect(raw.readUInt32BE(1036)).toBe(0)
    expect(raw.readBigUInt64BE(1040)).toBe(BigInt(SIZE))
    expect(raw.readUInt32BE(1048)).toBe(512)

    const expected = Buffer.from(base)
    const disk = await openImage(join(dir, 'new.cow'), { readOnly: false })
    try {
      const first = pattern(700, 5)
      await disk.write(1000, first)
      first.copy(expected, 1000)
      await disk.writeZeroes(SIZE - 600, 600)
      expected.fill(0, SIZE - 600)
      await disk.flush()
    } finally {
      await disk.close()
    }
    const again = await openImage(join(dir, 'new.cow'), { readOnly: true })
    try {
      expect((await again.read(0, SIZE)).equals(expected)).toBe(true)
      const info = await again.info()
      // Sectors 1..3 (the 700 bytes at 1000) and the last two sectors.
      expect(info['allocated-clusters']).toBe(5)
    } finally {
      await again.close()
    }
    const bytes = await readFile(join(dir, 'new.cow'))
    expect(bytes[1056]).toBe(0b00001110)
  })

  it('refuses a backing file that looks like another format, since cow records none', async () => {
    const qcow2Like = Buffer.alloc(4096)
    Buffer.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3]).copy(qcow2Like)
    await writeFile(join(dir, 'base.img'), qcow2Like)
    await writeFile(
      join(dir, 'disk.cow'),
      buildQemuCow({
        size: 4096,
        backing: 'base.img',
        data: Buffer.alloc(4096),
        allocated: new Set(),
      }),
    )
    await expectError(
      openImage(join(dir, 'disk.cow')),
      'UNSUPPORTED_FEATURE',
      /does not record the format of its backing file 'base.img', which starts like a qcow2 image/,
    )
    const [info] = await imageInfo(join(dir, 'disk.cow'))
    expect(info?.warnings?.join('\n')).toMatch(/refusing to guess/)
  })

  it('follows backing names only under the name policy', async () => {
    await writeFile(
      join(dir, 'disk.cow'),
      buildQemuCow({
        size: 4096,
        backing: '/etc/passwd',
        data: Buffer.alloc(4096),
        allocated: new Set(),
      }),
    )
    await expectError(
      openImage(join(dir, 'disk.cow')),
      'UNTRUSTED_NAME',
      /Refusing to open the backing file '\/etc\/passwd'/,
    )
  })

  describe('hostile headers', () => {
    const good = (): Buffer =>
      buildQemuCow({ size: 8192, data: Buffer.alloc(8192), allocated: new Set([1]) })
    const cases: [string, (file: Buffer) => Buffer, string, RegExp][] = [
      [
        'version 1',
        (file) => (file.writeUInt32BE(1, 4), file),
        'UNSUPPORTED_FEATURE',
        /cow version 1/,
      ],
      [
        'sector size 4096',
        (file) => (file.writeUInt32BE(4096, 1048), file),
        'CORRUPT_HEADER',
        /sector size 4096/,
      ],
      [
        'unterminated name',
        (file) => (file.fill(0x61, 8, 1032), file),
        'CORRUPT_HEADER',
        /backing file .* no NUL terminator/,
      ],
      [
        'truncated header',
        (file) => file.subarray(0, 1000),
        'CORRUPT_HEADER',
        /too short for the 1056-byte cow version 2 header/,
      ],
      [
        'bitmap past the end',
        (file) => (file.writeBigUInt64BE(2n ** 40n, 1040), file),
        'CORRUPT_IMAGE',
        /too short for its .* bitmap/,
      ],
      [
        'size beyond 2^53',
        (file) => (file.writeBigUInt64BE(2n ** 60n, 1040), file),
        'SIZE_LIMIT',
        /cow size/,
      ],
      [
        'huge bitmap',
        (file) => (file.writeBigUInt64BE(2n ** 52n, 1040), file),
        'SIZE_LIMIT',
        /bitmap; the limit/,
      ],
    ]
    for (const [name, damage, code, text] of cases) {
      it(`refuses ${name}`, async () => {
        await writeFile(join(dir, 'bad.cow'), damage(good()))
        await expectError(openImage(join(dir, 'bad.cow'), { format: 'cow' }), code, text)
      })
    }
  })
})

describe('user-mode Linux COW version 3', () => {
  for (const unpacked of [false, true]) {
    it(`reads the ${unpacked ? 'unpacked 64-bit' : 'packed'} layout with 4 KiB alignment`, async () => {
      const base = pattern(SIZE, 6)
      const data = pattern(SIZE, 7)
      await writeFile(join(dir, 'root_fs'), base)
      const mtime = Math.floor((await stat(join(dir, 'root_fs'))).mtimeMs / 1000)
      await writeFile(
        join(dir, 'uml.cow'),
        buildUmlCow({
          size: SIZE,
          backing: 'root_fs',
          mtime,
          alignment: 4096,
          unpacked,
          data,
          allocated: ALLOCATED,
        }),
      )
      const disk = await openImage(join(dir, 'uml.cow'), { readOnly: true })
      try {
        expect(disk.format).toBe('cow')
        expect(
          (await disk.read(0, SIZE)).equals(expectedView(SIZE, 512, ALLOCATED, data, base)),
        ).toBe(true)
        const info = await disk.info()
        expect(info['format-specific']).toMatchObject({
          data: { version: 3, layout: unpacked ? 'uml-v3-unpacked' : 'uml-v3' },
        })
        expect(info.warnings ?? []).toEqual([])
      } finally {
        await disk.close()
      }
    })
  }

  it('is read-only, and refuses odd alignment, sector size and cow_format', async () => {
    const build = (): Buffer =>
      buildUmlCow({
        size: 4096,
        backing: 'root_fs',
        alignment: 512,
        data: Buffer.alloc(4096),
        allocated: new Set(),
      })
    await writeFile(join(dir, 'root_fs'), Buffer.alloc(4096))
    await writeFile(join(dir, 'uml.cow'), build())
    await expectError(
      openImage(join(dir, 'uml.cow'), { readOnly: false }),
      'NOT_CAPABLE',
      /reads but never writes/,
    )
    const damaged: [number, number, string, RegExp][] = [
      [24, 0, 'CORRUPT_HEADER', /alignment 0/],
      [20, 1000, 'CORRUPT_HEADER', /sector size 1000/],
      [28, 1, 'UNSUPPORTED_FEATURE', /cow_format 1/],
    ]
    for (const [offset, value, code, text] of damaged) {
      const file = build()
      file.writeUInt32BE(value, offset)
      await writeFile(join(dir, 'bad.cow'), file)
      await expectError(openImage(join(dir, 'bad.cow')), code, text)
    }
  })
})

describe('a cow file cut short (issue 13: too short for its tables)', () => {
  it.each([
    ['QEMU v2', 1056],
    ['UML v3', 4128],
  ])(
    '%s: refused until its bitmap fits; a cut in the data reads zeros, as QEMU does',
    async (label, header) => {
      const data = pattern(SIZE, 3)
      const whole =
        label === 'QEMU v2'
          ? buildQemuCow({ size: SIZE, data, allocated: ALLOCATED })
          : buildUmlCow({
              size: SIZE,
              backing: 'base.raw',
              alignment: 512,
              data,
              allocated: ALLOCATED,
            })
      await writeFile(join(dir, 'base.raw'), Buffer.alloc(SIZE))
      const bitmapEnd = (label === 'QEMU v2' ? header : 4608) + Math.ceil(Math.ceil(SIZE / 512) / 8)
      for (const cut of [100, header - 1, header, bitmapEnd - 1, bitmapEnd, whole.length - 1]) {
        await writeFile(join(dir, 'cut.cow'), whole.subarray(0, cut))
        if (cut < bitmapEnd) {
          await expectError(
            openImage(join(dir, 'cut.cow'), { readOnly: true }),
            cut < header ? 'CORRUPT_HEADER' : 'CORRUPT_IMAGE',
            new RegExp(join(dir, 'cut.cow')),
          )
          continue
        }
        const disk = await openImage(join(dir, 'cut.cow'), { readOnly: true })
        try {
          expect(disk.size).toBe(SIZE)
          const view = await disk.read(0, SIZE)
          // The last allocated sector lost its last byte; everything else is intact.
          const expected = expectedView(SIZE, 512, ALLOCATED, data, Buffer.alloc(SIZE))
          if (cut === whole.length - 1) expected[SIZE - 1] = 0
          if (cut === bitmapEnd)
            for (const sector of ALLOCATED) expected.fill(0, sector * 512, sector * 512 + 512)
          expect(view.equals(expected)).toBe(true)
        } finally {
          await disk.close()
        }
      }
    },
  )
})
