import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import {
  ADD_COW_MAGIC,
  CURRENT_RULES,
  encodeHeader,
  FIELDS,
  FIXED_HEADER_SIZE,
  geometry,
  headerSizeFor,
  parseHeader,
  type AddCowHeader,
} from '../../../../../main/engine/formats/add-cow/header'
import { createOverlay } from '../../../../../main/engine/ops/create'
import { tempDir } from '../../../../helpers/tools'
import { makeSparse } from '../../../../helpers/images'
import { expectEngineErrorSync } from '../../../../helpers/errors'

const GIB = 1024 ** 3

function header(overrides: Partial<AddCowHeader> = {}): AddCowHeader {
  return {
    clusterBits: 16,
    incompatibleFeatures: 0n,
    compatibleFeatures: 0n,
    headerSize: 65536,
    backingName: 'base.raw',
    backingFormat: 'raw',
    imageName: 'overlay.raw',
    imageFormat: 'raw',
    ...overrides,
  }
}

/** A valid 4096-byte header (cluster_bits 12) to break one field at a time. */
function valid(overrides: Partial<AddCowHeader> = {}): Buffer {
  return encodeHeader(header({ clusterBits: 12, headerSize: 4096, ...overrides }), 'x.add-cow')
}

function withU32(buffer: Buffer, offset: number, value: number): Buffer {
  const copy = Buffer.from(buffer)
  copy.writeUInt32LE(value >>> 0, offset)
  return copy
}

function parseCode(
  data: Uint8Array,
  field?: string,
  code: Parameters<typeof expectEngineErrorSync>[1] = 'CORRUPT_HEADER',
) {
  const error = expectEngineErrorSync(() => parseHeader(data, '/images/x.add-cow'), code)
  expect(error.path).toBe('/images/x.add-cow')
  expect(error.message).toContain('/images/x.add-cow')
  if (field !== undefined) expect(error.field).toBe(field)
  return error
}

describe('the worked example of FORMATS.md §1', () => {
  // 8 GiB image file, 64 KiB clusters, backing ubuntu.img (raw), image test.raw.
  function expected(): Buffer {
    const bytes = Buffer.alloc(65536)
    bytes.write('ACOW', 0, 'ascii')
    bytes.writeUInt32LE(76, 4) // backing name offset
    bytes.writeUInt32LE(10, 8) // backing name length
    bytes.writeUInt32LE(86, 12) // image name offset
    bytes.writeUInt32LE(8, 16) // image name length
    bytes.writeUInt32LE(16, 20) // cluster_bits
    // 24-31 incompatible features, 32-39 compatible features: zero
    bytes.writeUInt32LE(65536, 40) // header_size
    bytes.write('raw', 44, 'ascii') // backing format, NUL-padded
    bytes.write('raw', 60, 'ascii') // image format
    bytes.write('ubuntu.img', 76, 'ascii')
    bytes.write('test.raw', 86, 'ascii')
    return bytes
  }

  it('encodes byte for byte', () => {
    const encoded = encodeHeader(
      header({ backingName: 'ubuntu.img', imageName: 'test.raw' }),
      'test.add-cow',
    )
    expect(encoded.length).toBe(65536)
    expect(encoded.equals(expected())).toBe(true)
    expect(encoded.readUInt32LE(0)).toBe(ADD_COW_MAGIC)
  })

  it('has the sizes the sheet gives', () => {
    const shape = geometry(16, 8 * GIB)
    expect(shape).toEqual({
      clusterSize: 65536,
      clusters: 131072,
      bitmapBytes: 16384,
      bitmapArea: 65536,
      fileLength: 131072,
    })
    expect(headerSizeFor(16)).toBe(65536)
  })

  it('is what createOverlay writes for an 8 GiB sparse base', async () => {
    const folder = await tempDir()
    try {
      await makeSparse(join(folder.path, 'ubuntu.img'), 8 * GIB)
      const result = await createOverlay({
        overlay: join(folder.path, 'test.add-cow'),
        backing: 'ubuntu.img',
        image: 'test.raw',
      })
      expect(result.size).toBe(8 * GIB)
      expect(result.backingFormat).toBe('raw')
      const file = await readFile(join(folder.path, 'test.add-cow'))
      expect(file.length).toBe(131072)
      expect(file.subarray(0, 65536).equals(expected())).toBe(true)
      expect(file.subarray(65536).every((byte) => byte === 0)).toBe(true)
      const parsed = parseHeader(file, 'test.add-cow')
      expect(parsed.header).toEqual({
        clusterBits: 16,
        incompatibleFeatures: 0n,
        compatibleFeatures: 0n,
        headerSize: 65536,
        backingName: 'ubuntu.img',
        backingFormat: 'raw',
        imageName: 'test.raw',
        imageFormat: 'raw',
      })
    } finally {
      await folder.cleanup()
    }
  })
})

describe('field table', () => {
  it('places every field at the offsets of FORMATS.md §1', () => {
    const layout = Object.values(FIELDS).map((field) => [field.offset, field.length])
    expect(layout).toEqual([
      [0, 4],
      [4, 4],
      [8, 4],
      [12, 4],
      [16, 4],
      [20, 4],
      [24, 8],
      [32, 8],
      [40, 4],
      [44, 16],
      [60, 16],
    ])
    const last = FIELDS.imageFormat
    expect(last.offset + last.length).toBe(FIXED_HEADER_SIZE)
  })
})

describe.each([12, 13, 16, 20, 21])('round trip at cluster_bits %i', (clusterBits) => {
  const size = headerSizeFor(clusterBits)

  it('parses what it encodes, with a backing file', () => {
    const input = header({
      clusterBits,
      headerSize: size,
      compatibleFeatures: 0x8000_0000_0000_0006n,
    })
    const encoded = encodeHeader(input, 'a.add-cow')
    expect(encoded.length).toBe(size)
    expect(size).toBe(Math.max(4096, 2 ** clusterBits))
    const { header: parsed, oddities } = parseHeader(encoded, 'a.add-cow')
    expect(parsed).toEqual(input)
    expect(oddities).toEqual({ nonZeroPadding: [], formatPaddingDirty: [] })
  })

  it('parses what it encodes, without a backing file', () => {
    const input = header({
      clusterBits,
      headerSize: size,
      backingName: null,
      backingFormat: null,
      compatibleFeatures: 1n,
    })
    const encoded = encodeHeader(input, 'a.add-cow')
    expect(encoded.readUInt32LE(4)).toBe(0)
    expect(encoded.readUInt32LE(8)).toBe(0)
    expect(encoded.readUInt32LE(12)).toBe(76)
    expect(encoded.subarray(44, 60).every((byte) => byte === 0)).toBe(true)
    expect(parseHeader(encoded, 'a.add-cow').header).toEqual(input)
  })

  it('accepts names that fill the header exactly', () => {
    const room = size - FIXED_HEADER_SIZE
    const input = header({
      clusterBits,
      headerSize: size,
      backingName: 'b'.repeat(room - 2),
      imageName: 'ii',
    })
    const encoded = encodeHeader(input, 'a.add-cow')
    expect(encoded.readUInt32LE(12)).toBe(size - 2)
    expect(parseHeader(encoded, 'a.add-cow').header.imageName).toBe('ii')
  })
})

describe('parseHeader refuses', () => {
  it('a file shorter than the fixed header', () => {
    for (const length of [0, 4, 75]) parseCode(valid().subarray(0, length), 'file length')
  })

  it('a wrong magic, naming the value', () => {
    const data = Buffer.from(valid())
    data.write('QFI\xfb', 0, 'latin1')
    const error = parseCode(data, 'magic', 'BAD_MAGIC')
    expect(error.message).toContain('0xfb494651')
  })

  it.each([1n, 2n, 1n << 63n])('incompatible feature bit 0x%s', (bit) => {
    const data = Buffer.from(valid())
    data.writeBigUInt64LE(bit, 24)
    const error = parseCode(data, 'incompatible features', 'UNSUPPORTED_FEATURE')
    expect(error.value).toBe(`0x${bit.toString(16)}`)
  })

  it.each([0, 9, 11, 22, 31, 0xffffffff])('cluster_bits %i', (bits) => {
    const error = parseCode(withU32(valid(), 20, bits), 'cluster_bits')
    expect(error.value).toBe(bits)
    expect(error.message).toContain('12..21')
  })

  it('cluster_bits 9 only under the V18 draft rules', () => {
    const data = withU32(valid(), 20, 9)
    parseCode(data, 'cluster_bits')
    expect(
      parseHeader(data, 'x', { minClusterBits: 9, formatMayFillField: true }).header.clusterBits,
    ).toBe(9)
  })

  it.each([
    [12, 8192],
    [12, 0],
    [16, 4096],
    [16, 65537],
    [21, 65536],
  ])('cluster_bits %i with header_size %i', (bits, size) => {
    const data = Buffer.alloc(2 * 1024 * 1024)
    valid().copy(data)
    data.writeUInt32LE(bits, 20)
    data.writeUInt32LE(size, 40)
    const error = parseCode(data, 'header_size')
    expect(error.value).toBe(size)
  })

  it('data shorter than header_size', () => {
    const data = encodeHeader(header(), 'x')
    parseCode(data.subarray(0, 4096), 'file length')
    parseCode(data.subarray(0, 65535), 'file length')
  })

  it('a backing name offset without a length and the reverse', () => {
    parseCode(withU32(withU32(valid(), 4, 0), 8, 5), 'backing name length')
    parseCode(withU32(valid(), 8, 0), 'backing name offset')
  })

  it.each([1, 75, 4095, 4096, 0xffffffff])('backing name offset %i', (offset) => {
    const error = parseCode(withU32(valid(), 4, offset), 'backing name offset')
    expect(error.value).toBe(offset)
  })

  it('a backing name running past header_size', () => {
    parseCode(withU32(withU32(valid(), 4, 4094), 8, 3), 'backing name length')
    parseCode(withU32(valid(), 8, 0xffffffff), 'backing name length')
  })

  it.each([0, 1, 75, 4095, 4096, 0x80000000])('image name offset %i', (offset) => {
    parseCode(withU32(valid(), 12, offset), 'image name offset')
  })

  it('an empty or overlong image name', () => {
    parseCode(withU32(valid(), 16, 0), 'image name length')
    parseCode(withU32(valid(), 16, 4096), 'image name length')
    parseCode(withU32(withU32(valid(), 12, 4000), 16, 97), 'image name length')
  })

  it('names that overlap', () => {
    parseCode(withU32(valid(), 12, 80), 'image name offset')
  })

  it('names that are not UTF-8 or hold a NUL', () => {
    const bad = Buffer.from(valid())
    bad[76] = 0xff
    parseCode(bad, 'backing name')
    const nul = Buffer.from(valid())
    nul[76 + 8 + 2] = 0
    parseCode(nul, 'image name')
  })

  it('formats without a NUL, unprintable, empty or inconsistent', () => {
    const full = Buffer.from(valid())
    full.write('abcdefghijklmnop', 44, 'ascii')
    parseCode(full, 'backing format')
    expect(
      parseHeader(full, 'x', { minClusterBits: 12, formatMayFillField: true }).header.backingFormat,
    ).toBe('abcdefghijklmnop')
    const unprintable = Buffer.from(valid())
    unprintable.write('r w', 60, 'ascii')
    parseCode(unprintable, 'image format')
    const emptyImage = Buffer.from(valid())
    emptyImage.fill(0, 60, 76)
    parseCode(emptyImage, 'image format')
    const emptyBacking = Buffer.from(valid())
    emptyBacking.fill(0, 44, 60)
    parseCode(emptyBacking, 'backing format')
    const strayBacking = Buffer.from(valid({ backingName: null, backingFormat: null }))
    strayBacking.write('raw', 44, 'ascii')
    parseCode(strayBacking, 'backing format')
  })
})

describe('parseHeader reports, without failing', () => {
  it('non-zero padding after the names and after a format terminator', () => {
    const data = Buffer.from(valid())
    data[200] = 1
    data[4095] = 7
    data[44 + 5] = 0x41
    const { oddities } = parseHeader(data, 'x')
    expect(oddities.nonZeroPadding).toEqual([200, 4095])
    expect(oddities.formatPaddingDirty).toEqual(['backing format'])
  })

  it('stops listing stray bytes after 16', () => {
    const data = Buffer.from(valid())
    data.fill(1, 1000, 2000)
    expect(parseHeader(data, 'x').oddities.nonZeroPadding).toHaveLength(16)
  })

  it('keeps unknown compatible feature bits', () => {
    const data = Buffer.from(valid())
    data.writeBigUInt64LE(0xf0n, 32)
    expect(parseHeader(data, 'x').header.compatibleFeatures).toBe(0xf0n)
  })

  it('uses the current rules by default', () => {
    expect(CURRENT_RULES).toEqual({ minClusterBits: 12, formatMayFillField: false })
  })
})

describe('encodeHeader refuses', () => {
  const encode = (overrides: Partial<AddCowHeader>) =>
    expectEngineErrorSync(
      () => encodeHeader(header({ clusterBits: 12, ...overrides }), 'x.add-cow'),
      'BAD_ARGUMENT',
    )

  it('empty names', () => {
    expect(encode({ imageName: '' }).field).toBe('image name')
    expect(encode({ backingName: '' }).field).toBe('backing name')
  })

  it('names with a NUL byte', () => {
    expect(encode({ imageName: 'a\0b' }).field).toBe('image name')
    expect(encode({ backingName: 'a\0b' }).field).toBe('backing name')
  })

  it('a backing name without a backing format', () => {
    expect(encode({ backingFormat: null }).field).toBe('backing format')
    expect(encode({ backingFormat: '' }).field).toBe('backing format')
  })

  it('names that do not fit, or leave the image name too late to read back', () => {
    expect(encode({ backingName: 'b'.repeat(4000), imageName: 'i'.repeat(21) }).field).toBe('names')
    // Fits byte-wise, but the image name would start at header_size - 1.
    expect(encode({ backingName: 'b'.repeat(4096 - 76 - 1), imageName: 'i' }).field).toBe('names')
    expect(
      encodeHeader(
        header({ clusterBits: 12, backingName: 'b'.repeat(4000), imageName: 'i'.repeat(20) }),
        'x',
      ).length,
    ).toBe(4096)
  })

  it('formats that are too long, not ASCII or empty', () => {
    expect(encode({ backingFormat: 'a'.repeat(16) }).field).toBe('backing format')
    expect(encode({ imageFormat: 'ra w' }).field).toBe('image format')
    expect(encode({ imageFormat: 'rå' }).field).toBe('image format')
    expect(encode({ imageFormat: '' }).field).toBe('image format')
    expect(
      encodeHeader(header({ clusterBits: 12, backingFormat: 'a'.repeat(15) }), 'x')
        .subarray(44, 60)
        .toString('latin1'),
    ).toBe('a'.repeat(15) + '\0')
  })

  it('stores multi-byte UTF-8 names by their byte length', () => {
    const encoded = encodeHeader(
      header({ clusterBits: 12, backingName: 'bäse.raw', imageName: 'ø.raw' }),
      'x',
    )
    expect(encoded.readUInt32LE(8)).toBe(9)
    expect(encoded.readUInt32LE(12)).toBe(85)
    expect(encoded.readUInt32LE(16)).toBe(6)
    expect(parseHeader(encoded, 'x').header.imageName).toBe('ø.raw')
  })
})
