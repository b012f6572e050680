import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { deflateRawSync } from 'node:zlib'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'

import { isEngineError, type EngineError } from '../../../../../main/engine/errors'
import { zstdFrameLength } from '../../../../../main/engine/formats/qcow2/compression'
import { parseQcow2Header } from '../../../../../main/engine/formats/qcow2/header'
import { imageInfo } from '../../../../../main/engine/ops/info'
import { openImage, probeFormat } from '../../../../../main/engine/open'
import { expectEngineErrorSync, expectError } from '../../../../helpers/errors'
import { tempDir } from '../../../../helpers/tools'
import { buildQcow2, type Qcow2Layout } from '../../../../helpers/format-builders'
import { pattern } from '../../../../helpers/images'

let dir: string
let cleanup: () => Promise<void>

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-qcow2-'))
})
afterEach(async () => {
  await cleanup()
})

const CLUSTER = 65536
const DATA = pattern(CLUSTER, 21)
const COMPRESSED = Buffer.concat([
  Buffer.alloc(30000, 7),
  pattern(5536, 22),
  Buffer.alloc(30000, 9),
])

function image(extra: Partial<Parameters<typeof buildQcow2>[0]> = {}): Qcow2Layout {
  return buildQcow2({ data: DATA, compressedStream: deflateRawSync(COMPRESSED), ...extra })
}

async function open(file: Buffer, readOnly = true): Promise<Awaited<ReturnType<typeof openImage>>> {
  await writeFile(join(dir, 'image.qcow2'), file)
  return openImage(join(dir, 'image.qcow2'), { format: 'qcow2', readOnly })
}

describe('qcow2 built by hand from the spec', () => {
  it('reads data, zero and compressed clusters, and reports their status', async () => {
    const disk = await open(image().file)
    try {
      expect(await probeFormat(join(dir, 'image.qcow2'))).toBe('qcow2')
      expect(disk.size).toBe(1024 * 1024)
      const content = await disk.read(0, disk.size)
      expect(content.subarray(0, CLUSTER).equals(DATA)).toBe(true)
      expect(content.subarray(CLUSTER, 2 * CLUSTER).every((byte) => byte === 0)).toBe(true)
      expect(content.subarray(2 * CLUSTER, 3 * CLUSTER).equals(COMPRESSED)).toBe(true)
      expect(content.subarray(3 * CLUSTER).every((byte) => byte === 0)).toBe(true)
      // A read inside the compressed cluster, and one spanning three kinds.
      expect(
        (await disk.read(2 * CLUSTER + 29990, 100)).equals(COMPRESSED.subarray(29990, 30090)),
      ).toBe(true)
      expect(
        (await disk.read(CLUSTER - 10, CLUSTER + 20)).equals(
          content.subarray(CLUSTER - 10, 2 * CLUSTER + 10),
        ),
      ).toBe(true)
      expect(await disk.blockStatus(0, disk.size)).toEqual([
        { offset: 0, length: CLUSTER, depth: 0, present: true, zero: false },
        { offset: CLUSTER, length: CLUSTER, depth: 0, present: true, zero: true },
        { offset: 2 * CLUSTER, length: CLUSTER, depth: 0, present: true, zero: false },
        {
          offset: 3 * CLUSTER,
          length: disk.size - 3 * CLUSTER,
          depth: 0,
          present: false,
          zero: true,
        },
      ])
      expect((await disk.info())['format-specific']).toMatchObject({
        type: 'qcow2',
        data: { compat: '1.1', 'refcount-bits': 16 },
      })
    } finally {
      await disk.close()
    }
  })

  it('follows its own backing file with the recorded format, under the name policy', async () => {
    await writeFile(join(dir, 'base.raw'), pattern(1024 * 1024, 23))
    const disk = await open(image({ backing: 'base.raw', backingFormat: 'raw' }).file)
    try {
      expect(disk.backing?.format).toBe('raw')
      const base = pattern(1024 * 1024, 23)
      expect(
        (await disk.read(3 * CLUSTER, 1000)).equals(base.subarray(3 * CLUSTER, 3 * CLUSTER + 1000)),
      ).toBe(true)
      expect((await disk.blockStatus(3 * CLUSTER, CLUSTER))[0]).toMatchObject({
        depth: 1,
        present: true,
      })
    } finally {
      await disk.close()
    }
    await expectError(
      open(image({ backing: '/etc/shadow', backingFormat: 'raw' }).file),
      'UNTRUSTED_NAME',
      /Refusing to open the backing file '\/etc\/shadow'/,
    )
    await expectError(
      open(
        image({ backing: 'json:{"file":{"filename":"/etc/shadow"}}', backingFormat: 'raw' }).file,
      ),
      'REFUSED_NAME',
      /json: names are never followed/,
    )
    const [info] = await imageInfo(join(dir, 'image.qcow2'))
    expect(info?.names?.[0]).toMatchObject({ followed: false, reason: 'json' })
  })

  it('opens an unrecorded backing format as raw, and refuses to guess when it looks like an image', async () => {
    await writeFile(join(dir, 'base.raw'), pattern(4096, 24))
    const disk = await open(image({ backing: 'base.raw' }).file)
    try {
      expect(disk.backing?.format).toBe('raw')
      expect((await disk.info()).warnings?.join('\n')).toMatch(
        /backing format is not recorded; 'base.raw' is opened as raw/,
      )
    } finally {
      await disk.close()
    }
    await writeFile(join(dir, 'base.qcow2'), image().file)
    await expectError(
      open(image({ backing: 'base.qcow2' }).file),
      'UNSUPPORTED_FEATURE',
      /starts like a qcow2 image; refusing to guess.*qemu-img rebase -u/,
    )
  })

  it('finds the end of one zstd frame among trailing bytes', () => {
    // A raw-block frame: magic, descriptor (single segment, 1-byte content size), size 5, one last raw block of 5 bytes.
    const frame = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0x20, 0x05, 0x29, 0x00, 0x00, 1, 2, 3, 4, 5])
    expect(zstdFrameLength(Buffer.concat([frame, Buffer.from([9, 9, 9])]))).toBe(frame.length)
    expect(zstdFrameLength(frame.subarray(0, 10))).toBe(-1)
  })

  describe('hostile headers and tables', () => {
    const at = (file: Buffer, write: (file: Buffer) => void): Buffer => (write(file), file)
    const header: [string, () => Buffer, string, RegExp][] = [
      [
        'version 4',
        () => at(image().file, (f) => f.writeUInt32BE(4, 4)),
        'UNSUPPORTED_FEATURE',
        /qcow2 version 4/,
      ],
      [
        'version 1 (qcow)',
        () => at(image().file, (f) => f.writeUInt32BE(1, 4)),
        'UNSUPPORTED_FEATURE',
        /qcow2 version 1/,
      ],
      [
        'cluster_bits 8',
        () => at(image().file, (f) => f.writeUInt32BE(8, 20)),
        'CORRUPT_HEADER',
        /cluster_bits 8/,
      ],
      [
        'cluster_bits 22',
        () => at(image().file, (f) => f.writeUInt32BE(22, 20)),
        'CORRUPT_HEADER',
        /cluster_bits 22/,
      ],
      [
        'header_length 100',
        () => at(image().file, (f) => f.writeUInt32BE(100, 100)),
        'CORRUPT_HEADER',
        /header_length 100/,
      ],
      [
        'header_length 1 MiB',
        () => at(image().file, (f) => f.writeUInt32BE(1 << 20, 100)),
        'CORRUPT_HEADER',
        /header_length 1048576/,
      ],
      [
        'encryption',
        () => at(image().file, (f) => f.writeUInt32BE(2, 32)),
        'UNSUPPORTED_FEATURE',
        /encrypted qcow2 image .*LUKS/,
      ],
      [
        'an external data file',
        () => at(image().file, (f) => f.writeBigUInt64BE(4n, 72)),
        'UNSUPPORTED_FEATURE',
        /external data file/,
      ],
      [
        'an unknown incompatible feature',
        () => at(image().file, (f) => f.writeBigUInt64BE(1n << 40n, 72)),
        'UNSUPPORTED_FEATURE',
        /incompatible features .*bit 40/,
      ],
      [
        'the compression type bit without the field',
        () => at(image().file, (f) => f.writeBigUInt64BE(8n, 72)),
        'CORRUPT_HEADER',
        /compression_type 0/,
      ],
      [
        'compression type 2',
        () =>
          at(image({ headerLength: 112 }).file, (f) => (f.writeBigUInt64BE(8n, 72), (f[104] = 2))),
        'UNSUPPORTED_FEATURE',
        /compression type 2/,
      ],
      [
        'a compression type without the bit',
        () => at(image({ headerLength: 112 }).file, (f) => (f[104] = 1)),
        'CORRUPT_HEADER',
        /compression_type 1/,
      ],
      [
        'extended L2 with 4 KiB clusters',
        () => at(image().file, (f) => (f.writeBigUInt64BE(16n, 72), f.writeUInt32BE(12, 20))),
        'CORRUPT_HEADER',
        /extended L2 entries need at least 14/,
      ],
      [
        'refcount_order 7',
        () => at(image().file, (f) => f.writeUInt32BE(7, 96)),
        'CORRUPT_HEADER',
        /refcount_order 7/,
      ],
      [
        'size 2^60',
        () => at(image().file, (f) => f.writeBigUInt64BE(1n << 60n, 24)),
        'SIZE_LIMIT',
        /qcow2 size/,
      ],
      [
        'l1_size too small',
        () => at(image().file, (f) => f.writeUInt32BE(0, 36)),
        'CORRUPT_HEADER',
        /l1_size 0 .* needs at least 1/,
      ],
      [
        'l1_size 2^30',
        () => at(image().file, (f) => f.writeUInt32BE(1 << 30, 36)),
        'SIZE_LIMIT',
        /L1 table larger than/,
      ],
      [
        'an unaligned L1 table',
        () => at(image().file, (f) => f.writeBigUInt64BE(3n * 65536n + 8n, 40)),
        'CORRUPT_HEADER',
        /l1_table_offset .* multiple of the cluster size/,
      ],
      [
        'an L1 table past the end',
        () => at(image().file, (f) => f.writeBigUInt64BE(1n << 40n, 40)),
        'CORRUPT_IMAGE',
        /L1 table .* past the end/,
      ],
      [
        'no refcount table',
        () => at(image().file, (f) => f.writeUInt32BE(0, 56)),
        'CORRUPT_HEADER',
        /refcount_table_clusters 0/,
      ],
      [
        'a huge refcount table',
        () => at(image().file, (f) => f.writeUInt32BE(1 << 20, 56)),
        'SIZE_LIMIT',
        /refcount table larger than/,
      ],
      [
        'too many snapshots',
        () => at(image().file, (f) => f.writeUInt32BE(1 << 20, 60)),
        'CORRUPT_HEADER',
        /nb_snapshots/,
      ],
      [
        'a backing name outside the first cluster',
        () => at(image().file, (f) => f.writeBigUInt64BE(1n << 20n, 8)),
        'CORRUPT_HEADER',
        /backing_file_offset 0x100000/,
      ],
      [
        'a backing name too long',
        () => at(image({ backing: 'base.raw' }).file, (f) => f.writeUInt32BE(2000, 16)),
        'CORRUPT_HEADER',
        /backing_file_size 2000/,
      ],
      [
        'a backing name that is not UTF-8',
        () => at(image({ backing: 'base.raw' }).file, (f) => f.fill(0xff, 112, 116)),
        'CORRUPT_HEADER',
        /backing file name .* not valid UTF-8/,
      ],
      [
        'a header extension running past the cluster',
        () =>
          at(
            image().file,
            (f) => (f.writeUInt32BE(0x12345678, 104), f.writeUInt32BE(0xfffffff0, 108)),
          ),
        'CORRUPT_HEADER',
        /header extension 0x12345678 length 4294967280/,
      ],
      [
        'a long backing format extension',
        () => at(image({ backingFormat: 'raw' }).file, (f) => f.writeUInt32BE(40, 108)),
        'CORRUPT_HEADER',
        /backing format extension length 40/,
      ],
    ]
    for (const [name, build, code, text] of header) {
      it(`refuses ${name}`, async () => {
        await expectError(open(build()), code, text)
      })
    }

    const tables: [string, (layout: Qcow2Layout) => void, number, string, RegExp][] = [
      [
        'an unaligned L2 table',
        (l) => l.file.writeBigUInt64BE((1n << 63n) | BigInt(l.l2Offset + 512), l.l1Offset),
        0,
        'CORRUPT_IMAGE',
        /L2 table offset .* not aligned/,
      ],
      [
        'an L2 table past the end',
        (l) => l.file.writeBigUInt64BE(1n << 44n, l.l1Offset),
        0,
        'CORRUPT_IMAGE',
        /L2 table offset .* past the end/,
      ],
      [
        'an unaligned data cluster',
        (l) => l.file.writeBigUInt64BE(BigInt(l.dataOffset + 4096), l.l2Offset),
        0,
        'CORRUPT_IMAGE',
        /data cluster offset \(guest offset 0\) 331776 .* not aligned/,
      ],
      [
        'a data cluster past the end',
        (l) => l.file.writeBigUInt64BE(1n << 50n, l.l2Offset),
        0,
        'CORRUPT_IMAGE',
        /data cluster offset .* past the end/,
      ],
      [
        'a compressed cluster past the end',
        (l) => l.file.writeBigUInt64BE((1n << 62n) | (1n << 50n), l.l2Offset + 16),
        2,
        'CORRUPT_IMAGE',
        /compressed cluster offset .* outside/,
      ],
      [
        'a compressed cluster that does not inflate',
        (l) => l.file.fill(0xff, l.compressedOffset, l.compressedOffset + 64),
        2,
        'CORRUPT_IMAGE',
        /cannot be decompressed: deflate error/,
      ],
      [
        'a compressed cluster that inflates short',
        (l) => deflateRawSync(Buffer.alloc(100)).copy(l.file, l.compressedOffset),
        2,
        'CORRUPT_IMAGE',
        /inflates to 100 bytes instead of 65536/,
      ],
    ]
    for (const [name, damage, cluster, code, text] of tables) {
      it(`refuses to read ${name}`, async () => {
        const layout = image()
        damage(layout)
        const disk = await open(layout.file)
        try {
          await expectError(disk.read(cluster * CLUSTER, 512), code, text)
        } finally {
          await disk.close()
        }
      })
    }

    it('refuses to write images whose metadata it cannot keep consistent', async () => {
      await expectError(
        open(
          at(image().file, (f) => f.writeBigUInt64BE(1n, 72)),
          false,
        ),
        'NOT_CAPABLE',
        /dirty bit is set/,
      )
      await expectError(
        open(
          at(image().file, (f) => f.writeBigUInt64BE(2n, 72)),
          false,
        ),
        'NOT_CAPABLE',
        /QEMU marked it corrupt/,
      )
      await expectError(
        open(
          at(image().file, (f) => f.writeBigUInt64BE(1n, 88)),
          false,
        ),
        'NOT_CAPABLE',
        /persistent dirty bitmaps/,
      )
      const dirty = await open(at(image().file, (f) => f.writeBigUInt64BE(1n, 72)))
      try {
        expect((await dirty.info()).warnings?.join('\n')).toMatch(/dirty bit is set/)
      } finally {
        await dirty.close()
      }
    })

    it('reports a bad magic', () => {
      const file = image().file
      file.writeUInt32BE(0x12345678, 0)
      expect(() => parseQcow2Header(file, 'x.qcow2', file.length)).toThrow(
        /not a qcow2 file: magic 0x12345678/,
      )
    })
  })
})

describe('a qcow2 file cut short (issue 13: too short for its tables)', () => {
  // Clusters of the built image: 0 header, 1 refcount table, 2 refcount block, 3 L1, 4 L2,
  // 5 data, 6 compressed data (at 6 * CLUSTER + 1000). Cut anywhere, a table that no longer
  // fits is refused on open, a data cluster past the end on read; never zeros read as data.
  it('refuses every cut that removes a table, and every read of a cluster past the end', async () => {
    const layout = image()
    const whole = layout.file
    const cuts = [
      50,
      104,
      CLUSTER,
      CLUSTER + 8,
      2 * CLUSTER - 1,
      2 * CLUSTER,
      2 * CLUSTER + 100,
      3 * CLUSTER - 1,
      3 * CLUSTER,
      3 * CLUSTER + 7,
      3 * CLUSTER + 8,
      4 * CLUSTER,
      5 * CLUSTER - 1,
      5 * CLUSTER,
      5 * CLUSTER + 1,
      6 * CLUSTER,
      layout.compressedOffset,
      layout.compressedOffset + 1,
      whole.length,
    ]
    const outcomes: string[] = []
    for (const cut of cuts) {
      let disk
      try {
        disk = await open(whole.subarray(0, cut))
      } catch (error) {
        expect(isEngineError(error), String(error)).toBe(true)
        const failure = error as EngineError
        // The header cluster (extensions included) is CORRUPT_HEADER; a table, CORRUPT_IMAGE.
        expect(failure.code, failure.message).toBe(
          cut < CLUSTER ? 'CORRUPT_HEADER' : 'CORRUPT_IMAGE',
        )
        expect(failure.message).toContain(join(dir, 'image.qcow2'))
        outcomes.push(`${cut}: open refused`)
        // The header, refcount table and block and the L1 table are checked on open.
        expect(cut).toBeLessThan(3 * CLUSTER + 8)
        continue
      }
      try {
        expect(cut).toBeGreaterThanOrEqual(3 * CLUSTER + 8)
        const read = async (cluster: number): Promise<string> =>
          disk.read(cluster * CLUSTER, CLUSTER).then(
            (data) => (data.equals(cluster === 0 ? DATA : COMPRESSED) ? 'ok' : 'WRONG'),
            (error: unknown) =>
              expectEngineErrorSync(() => {
                throw error
              }, 'CORRUPT_IMAGE').field ?? 'no field',
          )
        const data = await read(0)
        const compressed = await read(2)
        // A data cluster that starts past the end is refused; one cut in its middle reads its
        // missing part as zeros, as QEMU reads a short file.
        // An L2 table past the end is refused when a read needs it (as QEMU does).
        if (cut < 5 * CLUSTER) {
          expect([data, compressed]).toEqual(Array(2).fill('L2 table offset (L1 index 0)'))
          outcomes.push(`${cut}: read refused`)
          continue
        }
        if (cut <= 5 * CLUSTER) expect(data).toBe('data cluster offset (guest offset 0)')
        if (cut >= 6 * CLUSTER) expect(data).toBe('ok')
        if (cut <= layout.compressedOffset)
          expect(compressed).toBe('compressed cluster offset (guest offset 131072)')
        if (cut === whole.length) expect(compressed).toBe('ok')
        outcomes.push(`${cut}: data ${data}, compressed ${compressed}`)
      } finally {
        await disk.close()
      }
    }
    console.log(`qcow2 cut short: ${outcomes.join('; ')}`)
  })
})
