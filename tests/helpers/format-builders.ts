/**
 * Byte-by-byte builders of the old formats, straight from /work/shared/FORMATS.md (§2, §3) and
 * the Linux kernel's arch/um/drivers/cow_user.c, independent of the engine's own field tables.
 */

/** Set bit `index` (least significant bit first) of `bitmap`. */
export function setBit(bitmap: Buffer, index: number): void {
  bitmap[index >>> 3] = (bitmap[index >>> 3] ?? 0) | (1 << (index & 7))
}

const roundUp = (value: number, multiple: number): number => Math.ceil(value / multiple) * multiple

/** The guest view an overlay shows: allocated units from `data`, others from `base` (zeros past it). */
export function expectedView(
  size: number,
  unit: number,
  allocated: Set<number>,
  data: Buffer,
  base: Buffer | null,
): Buffer {
  const view = Buffer.alloc(size)
  for (let offset = 0; offset < size; offset += unit) {
    const end = Math.min(offset + unit, size)
    if (allocated.has(offset / unit)) data.copy(view, offset, offset, end)
    else if (base && offset < base.length)
      base.copy(view, offset, offset, Math.min(end, base.length))
  }
  return view
}

/** QEMU cow version 2: 1056-byte big-endian header with padding, bitmap, data after it. */
export function buildQemuCow(options: {
  size: number
  backing?: string
  mtime?: number
  /** Guest content; allocated sectors are stored from it. */
  data: Buffer
  allocated: Set<number>
}): Buffer {
  const sectors = Math.ceil(options.size / 512)
  const bitmapBytes = Math.ceil(sectors / 8)
  const dataOffset = roundUp(1056 + bitmapBytes, 512)
  const file = Buffer.alloc(dataOffset + sectors * 512)
  file.writeUInt32BE(0x4f4f4f4d, 0)
  file.writeUInt32BE(2, 4)
  if (options.backing) file.write(options.backing, 8, 'utf8')
  file.writeInt32BE(options.mtime ?? 0, 1032)
  file.writeBigUInt64BE(BigInt(options.size), 1040)
  file.writeUInt32BE(512, 1048)
  file.fill(0xee, dataOffset)
  const bitmap = file.subarray(1056, 1056 + bitmapBytes)
  for (const sector of options.allocated) {
    setBit(bitmap, sector)
    options.data.copy(
      file,
      dataOffset + sector * 512,
      sector * 512,
      Math.min(sector * 512 + 512, options.size),
    )
  }
  return file
}

/** User-mode Linux COW version 3, packed (or the unpacked 64-bit layout). */
export function buildUmlCow(options: {
  size: number
  backing: string
  mtime?: number
  alignment: number
  unpacked?: boolean
  data: Buffer
  allocated: Set<number>
}): Buffer {
  const headerSize = options.unpacked ? 4136 : 4128
  const sectors = Math.ceil(options.size / 512)
  const bitmapOffset = roundUp(headerSize, options.alignment)
  const bitmapBytes = Math.ceil(sectors / 8)
  const dataOffset = roundUp(bitmapOffset + bitmapBytes, options.alignment)
  const file = Buffer.alloc(dataOffset + sectors * 512)
  file.writeUInt32BE(0x4f4f4f4d, 0)
  file.writeUInt32BE(3, 4)
  file.writeUInt32BE(options.mtime ?? 0, 8)
  const shift = options.unpacked ? 4 : 0
  file.writeBigUInt64BE(BigInt(options.size), 12 + shift)
  file.writeUInt32BE(512, 20 + shift)
  file.writeUInt32BE(options.alignment, 24 + shift)
  file.writeUInt32BE(0, 28 + shift)
  file.write(options.backing, 32 + shift, 'utf8')
  file.fill(0xee, dataOffset)
  const bitmap = file.subarray(bitmapOffset, bitmapOffset + bitmapBytes)
  for (const sector of options.allocated) {
    setBit(bitmap, sector)
    options.data.copy(
      file,
      dataOffset + sector * 512,
      sector * 512,
      Math.min(sector * 512 + 512, options.size),
    )
  }
  return file
}

/** The current add-cow header shape with V18's freedoms (cluster_bits 9..21, 16-byte formats). */
export function buildV18(options: {
  clusterBits: number
  size: number
  backing?: string
  backingFormat?: string
  image: string
  imageFormat?: string
  allocated: Set<number>
  allAllocated?: boolean
}): Buffer {
  const clusterSize = 2 ** options.clusterBits
  const headerSize = Math.max(4096, clusterSize)
  const clusters = Math.ceil(options.size / clusterSize)
  const bitmapArea = roundUp(Math.ceil(clusters / 8), clusterSize)
  const file = Buffer.alloc(headerSize + bitmapArea)
  file.write('ACOW', 0, 'latin1')
  let cursor = 76
  if (options.backing) {
    file.writeUInt32LE(cursor, 4)
    file.writeUInt32LE(Buffer.byteLength(options.backing), 8)
    cursor += file.write(options.backing, cursor, 'utf8')
  }
  file.writeUInt32LE(cursor, 12)
  file.writeUInt32LE(Buffer.byteLength(options.image), 16)
  file.write(options.image, cursor, 'utf8')
  file.writeUInt32LE(options.clusterBits, 20)
  file.writeBigUInt64LE(options.allAllocated ? 1n : 0n, 32)
  file.writeUInt32LE(headerSize, 40)
  if (options.backing) file.write(options.backingFormat ?? 'raw', 44, 16, 'latin1')
  file.write(options.imageFormat ?? 'raw', 60, 16, 'latin1')
  for (const cluster of options.allocated) setBit(file.subarray(headerSize), cluster)
  return file
}

/** The 2012 V12 draft: "ADD_COW\xff", little-endian, 64 KiB clusters. */
export function buildV12(options: {
  size: number
  backing?: string
  backingFormat?: string
  image: string
  imageFormat?: string
  pages?: number
  features?: bigint
  allocated: Set<number>
}): Buffer {
  const pages = options.pages ?? 1
  const headerSize = pages * 4096
  const clusters = Math.ceil(options.size / 65536)
  const bitmapArea = roundUp(Math.ceil(clusters / 8), 65536)
  const file = Buffer.alloc(headerSize + bitmapArea)
  Buffer.from([0x41, 0x44, 0x44, 0x5f, 0x43, 0x4f, 0x57, 0xff]).copy(file, 0)
  file.writeUInt32LE(1, 8)
  let cursor = 80
  if (options.backing) {
    file.writeUInt32LE(cursor, 12)
    file.writeUInt32LE(Buffer.byteLength(options.backing), 16)
    cursor += file.write(options.backing, cursor, 'utf8')
  }
  file.writeUInt32LE(cursor, 20)
  file.writeUInt32LE(Buffer.byteLength(options.image), 24)
  file.write(options.image, cursor, 'utf8')
  file.writeBigUInt64LE(options.features ?? 0n, 28)
  file.writeUInt32LE(pages, 44)
  if (options.backing && options.backingFormat !== undefined)
    file.write(options.backingFormat, 48, 16, 'latin1')
  file.write(options.imageFormat ?? 'raw', 64, 16, 'latin1')
  for (const cluster of options.allocated) setBit(file.subarray(headerSize), cluster)
  return file
}

/** The 2011/2012 v3 or v7 draft: big-endian, 1024-byte names, one bit per 512-byte sector. */
export function buildV3orV7(options: {
  layout: 'v3' | 'v7'
  size: number
  backing?: string
  image: string
  allocated: Set<number>
}): Buffer {
  const bitmapOffset = options.layout === 'v3' ? 2068 : 2560
  const sectors = Math.ceil(options.size / 512)
  const file = Buffer.alloc(bitmapOffset + Math.ceil(sectors / 8))
  Buffer.from([0x41, 0x44, 0x44, 0x5f, 0x43, 0x4f, 0x57, 0xff]).copy(file, 0)
  file.writeUInt32BE(1, 8)
  if (options.backing) file.write(options.backing, 12, 'utf8')
  file.write(options.image, 1036, 'utf8')
  if (options.layout === 'v3') file.writeBigUInt64BE(BigInt(options.size), 2060)
  for (const sector of options.allocated) setBit(file.subarray(bitmapOffset), sector)
  return file
}

/** An image file for a draft: `data` where allocated, a loud filler (0xee) elsewhere. */
export function draftImageFile(
  size: number,
  unit: number,
  allocated: Set<number>,
  data: Buffer,
): Buffer {
  const file = Buffer.alloc(size, 0xee)
  for (const index of allocated)
    data.copy(file, index * unit, index * unit, Math.min(index * unit + unit, size))
  return file
}

/** Where {@link buildQcow2} put things, for tests that damage them. */
export interface Qcow2Layout {
  file: Buffer
  clusterSize: number
  l1Offset: number
  l2Offset: number
  dataOffset: number
  compressedOffset: number
}

/**
 * A small qcow2 version 3 image built by hand from docs/interop/qcow2.txt: 64 KiB clusters,
 * 1 MiB virtual size; guest cluster 0 is data (`data`), 1 is a zero cluster, 2 is compressed
 * (raw deflate of `compressed`), everything else unallocated. Clusters: 0 header, 1 refcount
 * table, 2 refcount block, 3 L1, 4 L2, 5 data, 6 compressed data (at an odd offset).
 */
export function buildQcow2(options: {
  data: Buffer
  compressedStream: Buffer
  backing?: string
  backingFormat?: string
  headerLength?: number
}): Qcow2Layout {
  const clusterSize = 65536
  const file = Buffer.alloc(7 * clusterSize)
  const headerLength = options.headerLength ?? 104
  file.writeUInt32BE(0x514649fb, 0)
  file.writeUInt32BE(3, 4)
  file.writeUInt32BE(16, 20)
  file.writeBigUInt64BE(1024n * 1024n, 24)
  file.writeUInt32BE(1, 36)
  file.writeBigUInt64BE(BigInt(3 * clusterSize), 40)
  file.writeBigUInt64BE(BigInt(clusterSize), 48)
  file.writeUInt32BE(1, 56)
  file.writeUInt32BE(4, 96)
  file.writeUInt32BE(headerLength, 100)
  let cursor = headerLength
  if (options.backingFormat) {
    file.writeUInt32BE(0xe2792aca, cursor)
    file.writeUInt32BE(options.backingFormat.length, cursor + 4)
    file.write(options.backingFormat, cursor + 8, 'latin1')
    cursor += 8 + Math.ceil(options.backingFormat.length / 8) * 8
  }
  cursor += 8 // end-of-extensions marker (zeros)
  if (options.backing) {
    file.writeBigUInt64BE(BigInt(cursor), 8)
    file.writeUInt32BE(Buffer.byteLength(options.backing), 16)
    file.write(options.backing, cursor, 'utf8')
  }
  file.writeBigUInt64BE(BigInt(2 * clusterSize), clusterSize) // refcount table[0] -> block
  for (let cluster = 0; cluster < 7; cluster++) file.writeUInt16BE(1, 2 * clusterSize + cluster * 2)
  const copied = 1n << 63n
  file.writeBigUInt64BE(copied | BigInt(4 * clusterSize), 3 * clusterSize) // L1[0] -> L2
  const l2 = 4 * clusterSize
  file.writeBigUInt64BE(copied | BigInt(5 * clusterSize), l2) // guest cluster 0: data
  file.writeBigUInt64BE(1n, l2 + 8) // guest cluster 1: zero
  const compressedOffset = 6 * clusterSize + 1000
  const sectors =
    Math.floor((compressedOffset + options.compressedStream.length - 1) / 512) -
    Math.floor(compressedOffset / 512)
  file.writeBigUInt64BE((1n << 62n) | (BigInt(sectors) << 54n) | BigInt(compressedOffset), l2 + 16)
  options.data.copy(file, 5 * clusterSize, 0, clusterSize)
  options.compressedStream.copy(file, compressedOffset)
  return {
    file,
    clusterSize,
    l1Offset: 3 * clusterSize,
    l2Offset: l2,
    dataOffset: 5 * clusterSize,
    compressedOffset,
  }
}

/**
 * An empty, writable qcow2 version 3 image of `size` bytes with 64 KiB clusters, as qemu-img
 * create makes it: header (cluster 0), refcount table (1), one refcount block with 16-bit
 * counts (2), L1 table (3); the four metadata clusters have refcount 1.
 */
export function buildEmptyQcow2(size: number): Buffer {
  const clusterSize = 65536
  const l1Entries = Math.ceil(size / (clusterSize * (clusterSize / 8)))
  const file = Buffer.alloc(4 * clusterSize)
  file.writeUInt32BE(0x514649fb, 0) // magic
  file.writeUInt32BE(3, 4) // version
  file.writeUInt32BE(16, 20) // cluster_bits
  file.writeBigUInt64BE(BigInt(size), 24)
  file.writeUInt32BE(l1Entries, 36) // l1_size
  file.writeBigUInt64BE(BigInt(3 * clusterSize), 40) // l1_table_offset
  file.writeBigUInt64BE(BigInt(clusterSize), 48) // refcount_table_offset
  file.writeUInt32BE(1, 56) // refcount_table_clusters
  file.writeUInt32BE(4, 96) // refcount_order: 16-bit counts
  file.writeUInt32BE(104, 100) // header_length (then the end-of-extensions marker, zeros)
  file.writeBigUInt64BE(BigInt(2 * clusterSize), clusterSize) // refcount table entry 0
  for (let cluster = 0; cluster < 4; cluster++) file.writeUInt16BE(1, 2 * clusterSize + cluster * 2)
  return file
}
