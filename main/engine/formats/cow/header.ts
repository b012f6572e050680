import { bounded, EngineError, SAFETY_LIMIT } from '../../errors'
import { bytes, decodeUtf8, i32, safeNumber, u32, u64 } from '../../struct'
import { COW_MAGIC } from './format'

/**
 * COW headers (FORMATS.md §3), big-endian, each described once with its byte offsets.
 *
 * QEMU's "cow" driver writes version 2: the C struct is not packed, so it has padding at
 * 1036-1039 and 1052-1055 and is 1056 bytes long. User-mode Linux writes version 3 (packed,
 * 4128 bytes; see the Linux kernel's arch/um/drivers/cow_user.c). Some 64-bit UML binaries
 * before December 2005 wrote version 3 unpacked (4136 bytes, a 64-bit mtime); cow_user.c
 * recognises that layout by the zero cow_format landing on the first bytes of the name.
 */
export const QEMU_V2_FIELDS = {
  magic: u32('magic', 0, false),
  version: u32('version', 4, false),
  /** 8-1031: NUL-terminated, NUL-padded. */
  backingFile: bytes('backing file', 8, 1024),
  /** 1032-1035: seconds; 1036-1039 padding. */
  mtime: i32('mtime', 1032, false),
  /** 1040-1047. */
  size: u64('size', 1040, false),
  /** 1048-1051: 512; 1052-1055 padding. */
  sectorSize: u32('sector size', 1048, false),
} as const

/** UML COW version 3, packed. */
export const UML_V3_FIELDS = {
  magic: u32('magic', 0, false),
  version: u32('version', 4, false),
  mtime: u32('mtime', 8, false),
  size: u64('size', 12, false),
  sectorSize: u32('sector size', 20, false),
  alignment: u32('alignment', 24, false),
  cowFormat: u32('cow_format', 28, false),
  backingFile: bytes('backing file', 32, 4096),
} as const

/** UML COW version 3 as unpacked 64-bit binaries wrote it (mtime stored by htonl in 64 bits). */
export const UML_V3_UNPACKED_FIELDS = {
  magic: u32('magic', 0, false),
  version: u32('version', 4, false),
  mtime: u32('mtime', 8, false),
  size: u64('size', 16, false),
  sectorSize: u32('sector size', 24, false),
  alignment: u32('alignment', 28, false),
  cowFormat: u32('cow_format', 32, false),
  backingFile: bytes('backing file', 36, 4096),
} as const

export { COW_MAGIC }
export const QEMU_COW_VERSION = 2
export const UML_COW_VERSION = 3
export const QEMU_V2_HEADER_SIZE = 1056
export const UML_V3_HEADER_SIZE = 4128
export const UML_V3_UNPACKED_HEADER_SIZE = 4136
export const SECTOR_SIZE = 512
/** Largest UML alignment accepted (UML uses 512 or the page size). */
export const MAX_ALIGNMENT = 1024 * 1024

/** A parsed COW header, either layout. */
export interface CowHeader {
  version: 2 | 3
  /** 'qemu-v2', 'uml-v3' or 'uml-v3-unpacked'. */
  layout: 'qemu-v2' | 'uml-v3' | 'uml-v3-unpacked'
  backingName: string | null
  /** Recorded backing file mtime, seconds since the epoch. */
  mtime: number
  size: number
  sectorSize: number
  /** Start of the bitmap. */
  bitmapOffset: number
  bitmapBytes: number
  /** Host offset of sector 0's data. */
  dataOffset: number
}

function corrupt(path: string, field: string, value: unknown, rule: string): EngineError {
  return new EngineError(
    'CORRUPT_HEADER',
    `cow ${field} ${bounded(String(value), SAFETY_LIMIT)} in ${path} is invalid: ${rule}.`,
    {
      path,
      field,
      value,
    },
  )
}

function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple
}

function decodeName(path: string, raw: Uint8Array): string | null {
  const nul = raw.indexOf(0)
  if (nul === -1)
    throw corrupt(path, 'backing file', `(${raw.length} bytes)`, 'it has no NUL terminator')
  if (nul === 0) return null
  const text = decodeUtf8(raw.subarray(0, nul))
  if (text === null) throw corrupt(path, 'backing file', `(${nul} bytes)`, 'it is not valid UTF-8')
  return text
}

/**
 * Parse a COW header (QEMU version 2, or UML version 3 in either layout). `data` holds the start
 * of the file (at least 4136 bytes when the file is that long).
 */
export function parseCowHeader(data: Uint8Array, path: string): CowHeader {
  if (data.length < 8) {
    throw new EngineError(
      'CORRUPT_HEADER',
      `${path} is ${data.length} bytes long, too short for a cow header.`,
      {
        path,
        field: 'file length',
        value: data.length,
      },
    )
  }
  const magic = QEMU_V2_FIELDS.magic.get(data)
  if (magic !== COW_MAGIC) {
    throw new EngineError(
      'BAD_MAGIC',
      `${path} is not a cow file: magic 0x${magic.toString(16).padStart(8, '0')} is not 0x${COW_MAGIC.toString(16)}.`,
      { path, field: 'magic', value: magic },
    )
  }
  const version = QEMU_V2_FIELDS.version.get(data)
  if (version === QEMU_COW_VERSION) {
    if (data.length < QEMU_V2_HEADER_SIZE) {
      throw new EngineError(
        'CORRUPT_HEADER',
        `${path} is ${data.length} bytes long, too short for the ${QEMU_V2_HEADER_SIZE}-byte cow version 2 header.`,
        { path, field: 'file length', value: data.length },
      )
    }
    const sectorSize = QEMU_V2_FIELDS.sectorSize.get(data)
    if (sectorSize !== SECTOR_SIZE)
      throw corrupt(path, 'sector size', sectorSize, `it must be ${SECTOR_SIZE}`)
    const size = safeNumber(QEMU_V2_FIELDS.size.get(data), path, 'cow size')
    const sectors = Math.ceil(size / SECTOR_SIZE)
    const bitmapBytes = Math.ceil(sectors / 8)
    return {
      version: 2,
      layout: 'qemu-v2',
      backingName: decodeName(path, QEMU_V2_FIELDS.backingFile.get(data)),
      mtime: QEMU_V2_FIELDS.mtime.get(data),
      size,
      sectorSize,
      bitmapOffset: QEMU_V2_HEADER_SIZE,
      bitmapBytes,
      dataOffset: roundUp(QEMU_V2_HEADER_SIZE + bitmapBytes, SECTOR_SIZE),
    }
  }
  if (version !== UML_COW_VERSION) {
    throw new EngineError(
      'UNSUPPORTED_FEATURE',
      `${path} is cow version ${version}; only version 2 (QEMU) and version 3 (user-mode Linux) are supported.`,
      { path, field: 'version', value: version },
    )
  }
  if (data.length < UML_V3_HEADER_SIZE) {
    throw new EngineError(
      'CORRUPT_HEADER',
      `${path} is ${data.length} bytes long, too short for the ${UML_V3_HEADER_SIZE}-byte cow version 3 header.`,
      { path, field: 'file length', value: data.length },
    )
  }
  // The packed layout puts the name at 32; the unpacked one puts cow_format (always 0) there.
  const unpacked = UML_V3_FIELDS.backingFile
    .get(data)
    .subarray(0, 4)
    .every((byte) => byte === 0)
  if (unpacked && data.length < UML_V3_UNPACKED_HEADER_SIZE) {
    throw new EngineError(
      'CORRUPT_HEADER',
      `${path} is ${data.length} bytes long, too short for the ${UML_V3_UNPACKED_HEADER_SIZE}-byte unpacked cow version 3 header.`,
      { path, field: 'file length', value: data.length },
    )
  }
  const fields = unpacked ? UML_V3_UNPACKED_FIELDS : UML_V3_FIELDS
  const headerSize = unpacked ? UML_V3_UNPACKED_HEADER_SIZE : UML_V3_HEADER_SIZE
  const cowFormat = fields.cowFormat.get(data)
  if (cowFormat !== 0) {
    throw new EngineError(
      'UNSUPPORTED_FEATURE',
      `${path} uses cow_format ${cowFormat}; only 0 (one bitmap bit per sector) exists.`,
      { path, field: 'cow_format', value: cowFormat },
    )
  }
  const sectorSize = fields.sectorSize.get(data)
  if (sectorSize < 512 || sectorSize > 65536 || (sectorSize & (sectorSize - 1)) !== 0) {
    throw corrupt(path, 'sector size', sectorSize, 'it must be a power of two in 512..65536')
  }
  const alignment = fields.alignment.get(data)
  if (alignment === 0 || alignment > MAX_ALIGNMENT) {
    throw corrupt(path, 'alignment', alignment, `it must lie in 1..${MAX_ALIGNMENT}`)
  }
  const size = safeNumber(fields.size.get(data), path, 'cow size')
  const bitmapBytes = Math.ceil(Math.ceil(size / sectorSize) / 8)
  const bitmapOffset = roundUp(headerSize, alignment)
  return {
    version: 3,
    layout: unpacked ? 'uml-v3-unpacked' : 'uml-v3',
    backingName: decodeName(path, fields.backingFile.get(data)),
    mtime: fields.mtime.get(data),
    size,
    sectorSize,
    bitmapOffset,
    bitmapBytes,
    dataOffset: roundUp(bitmapOffset + bitmapBytes, alignment),
  }
}

/**
 * Encode a QEMU cow version 2 header (1056 bytes) for `size` bytes backed by `backingName`
 * (stored as given) with the backing file's mtime in seconds.
 */
export function encodeQemuCowHeader(
  size: number,
  backingName: string | null,
  mtime: number,
  path: string,
): Buffer {
  const buffer = Buffer.alloc(QEMU_V2_HEADER_SIZE)
  const name = Buffer.from(backingName ?? '', 'utf8')
  if (name.length > 1023 || name.includes(0)) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `The backing file name for ${path} must be at most 1023 bytes without NUL (got ${name.length}).`,
      { path, field: 'backing file', value: backingName },
    )
  }
  QEMU_V2_FIELDS.magic.put(buffer, COW_MAGIC)
  QEMU_V2_FIELDS.version.put(buffer, QEMU_COW_VERSION)
  QEMU_V2_FIELDS.backingFile.put(buffer, name)
  QEMU_V2_FIELDS.mtime.put(buffer, mtime | 0)
  QEMU_V2_FIELDS.size.put(buffer, BigInt(size))
  QEMU_V2_FIELDS.sectorSize.put(buffer, SECTOR_SIZE)
  return buffer
}
