import { EngineError } from '../../errors'
import { bytes, decodeUtf8, u32, u64 } from '../../struct'

/**
 * The add-cow header, current layout (FORMATS.md §1; docs/add-cow-format.md).
 *
 * Every field is described once here with its byte offset; {@link parseHeader} and
 * {@link encodeHeader} both derive from this table. All integers are little-endian.
 */
export const FIELDS = {
  /** 0-3: "ACOW". */
  magic: u32('magic', 0, true),
  /** 4-7: 0 without a backing file, else in [76, header_size - 2]. */
  backingNameOffset: u32('backing name offset', 4, true),
  /** 8-11: 0 iff the offset is 0; offset + length <= header_size. */
  backingNameLength: u32('backing name length', 8, true),
  /** 12-15: required, in [76, header_size - 2]. */
  imageNameOffset: u32('image name offset', 12, true),
  /** 16-19: required, non-zero; offset + length <= header_size. */
  imageNameLength: u32('image name length', 16, true),
  /** 20-23: 12..21. */
  clusterBits: u32('cluster_bits', 20, true),
  /** 24-31: no bit defined; any set bit refuses the open. */
  incompatibleFeatures: u64('incompatible features', 24, true),
  /** 32-39: bit 0 ALL_ALLOCATED; unknown bits kept as they are. */
  compatibleFeatures: u64('compatible features', 32, true),
  /** 40-43: max(4096, cluster size); the bitmap starts here. */
  headerSize: u32('header_size', 40, true),
  /** 44-59: ASCII, NUL-terminated, zero-padded. */
  backingFormat: bytes('backing format', 44, 16),
  /** 60-75: ASCII, NUL-terminated, zero-padded, non-empty. */
  imageFormat: bytes('image format', 60, 16),
} as const

/** "ACOW" read as a little-endian u32. */
export const ADD_COW_MAGIC = 0x574f4341
/** Bytes of the fixed part of the header; names start here. */
export const FIXED_HEADER_SIZE = 76
export const MIN_CLUSTER_BITS = 12
export const MAX_CLUSTER_BITS = 21
export const DEFAULT_CLUSTER_BITS = 16
/** Compatible feature bit 0: every cluster is in the image file; bitmap and backing unused. */
export const FEATURE_ALL_ALLOCATED = 1n

/** A parsed add-cow header. Names are decoded UTF-8, stored without a terminator. */
export interface AddCowHeader {
  clusterBits: number
  incompatibleFeatures: bigint
  compatibleFeatures: bigint
  headerSize: number
  backingName: string | null
  backingFormat: string | null
  imageName: string
  imageFormat: string
}

/** Rules that differ between the current layout and the 2013 V18 draft (FORMATS.md §2). */
export interface HeaderRules {
  minClusterBits: number
  /** Whether a format name may fill all 16 bytes without a NUL. */
  formatMayFillField: boolean
}

export const CURRENT_RULES: HeaderRules = { minClusterBits: 12, formatMayFillField: false }

/** Where the header holds non-zero bytes that the layout says must be zero. */
export interface HeaderOddities {
  /** Offsets of non-zero bytes after the names, up to header_size. */
  nonZeroPadding: number[]
  /** Non-zero bytes after a format's NUL terminator. */
  formatPaddingDirty: string[]
}

/** The header size the layout requires for a cluster size. */
export function headerSizeFor(clusterBits: number): number {
  return Math.max(4096, 2 ** clusterBits)
}

function corrupt(path: string, field: string, value: unknown, rule: string): EngineError {
  return new EngineError(
    'CORRUPT_HEADER',
    `${field} ${String(value)} in ${path} is invalid: ${rule}.`,
    { path, field, value },
  )
}

function decodeFormat(
  raw: Uint8Array,
  path: string,
  field: string,
  rules: HeaderRules,
  oddities: HeaderOddities,
): string {
  const nul = raw.indexOf(0)
  if (nul === -1 && !rules.formatMayFillField) {
    throw corrupt(path, field, JSON.stringify(Buffer.from(raw).toString('latin1')), 'it has no NUL terminator within 16 bytes')
  }
  const end = nul === -1 ? raw.length : nul
  const text = raw.subarray(0, end)
  for (const byte of text) {
    if (byte < 0x21 || byte > 0x7e) {
      throw corrupt(path, field, JSON.stringify(Buffer.from(text).toString('latin1')), 'it is not printable ASCII')
    }
  }
  if (raw.subarray(end).some((byte) => byte !== 0)) oddities.formatPaddingDirty.push(field)
  return Buffer.from(text).toString('ascii')
}

function checkNameBounds(
  path: string,
  label: string,
  offset: number,
  length: number,
  headerSize: number,
): void {
  if (offset < FIXED_HEADER_SIZE || offset > headerSize - 2) {
    throw corrupt(path, `${label} name offset`, offset, `it must lie in ${FIXED_HEADER_SIZE}..${headerSize - 2}`)
  }
  if (length === 0) throw corrupt(path, `${label} name length`, 0, 'it must not be 0')
  if (offset + length > headerSize) {
    throw corrupt(path, `${label} name length`, length, `offset ${offset} + length runs past header_size ${headerSize}`)
  }
}

function decodeName(path: string, label: string, raw: Uint8Array): string {
  const text = decodeUtf8(raw)
  if (text === null) throw corrupt(path, `${label} name`, `(${raw.length} bytes)`, 'it is not valid UTF-8')
  if (text.includes('\0')) {
    throw corrupt(path, `${label} name`, JSON.stringify(text), 'it contains a NUL byte')
  }
  return text
}

/**
 * Parse and validate an add-cow header. `data` must hold at least the first `header_size`
 * bytes of the file (or all of it if shorter; a short file is reported as truncated).
 *
 * Refuses what the reference refuses (magic, incompatible bits, cluster_bits, header_size) and
 * also every name or format outside its bounds. Non-zero padding is not fatal: it is returned
 * in `oddities` for `check` to report.
 */
export function parseHeader(
  data: Uint8Array,
  path: string,
  rules: HeaderRules = CURRENT_RULES,
): { header: AddCowHeader; oddities: HeaderOddities } {
  if (data.length < FIXED_HEADER_SIZE) {
    throw new EngineError(
      'CORRUPT_HEADER',
      `${path} is ${data.length} bytes long, too short for the ${FIXED_HEADER_SIZE}-byte add-cow header.`,
      { path, field: 'file length', value: data.length },
    )
  }
  const magic = FIELDS.magic.get(data)
  if (magic !== ADD_COW_MAGIC) {
    throw new EngineError(
      'BAD_MAGIC',
      `${path} is not an add-cow file: magic 0x${magic.toString(16).padStart(8, '0')} is not 0x${ADD_COW_MAGIC.toString(16)} ("ACOW").`,
      { path, field: 'magic', value: magic },
    )
  }
  const incompatibleFeatures = FIELDS.incompatibleFeatures.get(data)
  if (incompatibleFeatures !== 0n) {
    throw new EngineError(
      'UNSUPPORTED_FEATURE',
      `${path} uses incompatible features 0x${incompatibleFeatures.toString(16)} that this tool does not know; it cannot be opened safely.`,
      { path, field: 'incompatible features', value: `0x${incompatibleFeatures.toString(16)}` },
    )
  }
  const clusterBits = FIELDS.clusterBits.get(data)
  if (clusterBits < rules.minClusterBits || clusterBits > MAX_CLUSTER_BITS) {
    throw corrupt(path, 'cluster_bits', clusterBits, `it must lie in ${rules.minClusterBits}..${MAX_CLUSTER_BITS}`)
  }
  const headerSize = FIELDS.headerSize.get(data)
  const expectedHeaderSize = headerSizeFor(clusterBits)
  if (headerSize !== expectedHeaderSize) {
    throw corrupt(path, 'header_size', headerSize, `cluster_bits ${clusterBits} requires ${expectedHeaderSize}`)
  }
  if (data.length < headerSize) {
    throw new EngineError(
      'CORRUPT_HEADER',
      `${path} is ${data.length} bytes long, shorter than its header_size ${headerSize}.`,
      { path, field: 'file length', value: data.length },
    )
  }
  const oddities: HeaderOddities = { nonZeroPadding: [], formatPaddingDirty: [] }

  const backingOffset = FIELDS.backingNameOffset.get(data)
  const backingLength = FIELDS.backingNameLength.get(data)
  let backingName: string | null = null
  let namesEnd = FIXED_HEADER_SIZE
  if (backingOffset === 0 || backingLength === 0) {
    if (backingOffset !== backingLength) {
      throw corrupt(
        path,
        backingOffset === 0 ? 'backing name length' : 'backing name offset',
        backingOffset === 0 ? backingLength : backingOffset,
        'offset and length must both be 0 when there is no backing file',
      )
    }
  } else {
    checkNameBounds(path, 'backing', backingOffset, backingLength, headerSize)
    backingName = decodeName(path, 'backing', data.subarray(backingOffset, backingOffset + backingLength))
    namesEnd = Math.max(namesEnd, backingOffset + backingLength)
  }

  const imageOffset = FIELDS.imageNameOffset.get(data)
  const imageLength = FIELDS.imageNameLength.get(data)
  checkNameBounds(path, 'image', imageOffset, imageLength, headerSize)
  const imageName = decodeName(path, 'image', data.subarray(imageOffset, imageOffset + imageLength))
  namesEnd = Math.max(namesEnd, imageOffset + imageLength)
  if (
    backingName !== null &&
    imageOffset < backingOffset + backingLength &&
    backingOffset < imageOffset + imageLength
  ) {
    throw corrupt(path, 'image name offset', imageOffset, `it overlaps the backing name at ${backingOffset}..${backingOffset + backingLength - 1}`)
  }

  const backingFormatText = decodeFormat(FIELDS.backingFormat.get(data), path, 'backing format', rules, oddities)
  const imageFormat = decodeFormat(FIELDS.imageFormat.get(data), path, 'image format', rules, oddities)
  if (imageFormat === '') throw corrupt(path, 'image format', '""', 'it must not be empty')
  if (backingName === null && backingFormatText !== '') {
    throw corrupt(path, 'backing format', JSON.stringify(backingFormatText), 'it must be empty when there is no backing file')
  }
  if (backingName !== null && backingFormatText === '') {
    throw corrupt(path, 'backing format', '""', 'it must name the backing file\'s format')
  }

  // Every byte from the fixed part to header_size that is not a name must be zero.
  for (let offset = FIXED_HEADER_SIZE; offset < headerSize; offset++) {
    if (data[offset] === 0) continue
    const inBacking =
      backingName !== null && offset >= backingOffset && offset < backingOffset + backingLength
    const inImage = offset >= imageOffset && offset < imageOffset + imageLength
    if (!inBacking && !inImage) {
      oddities.nonZeroPadding.push(offset)
      if (oddities.nonZeroPadding.length >= 16) break
    }
  }
  void namesEnd

  return {
    header: {
      clusterBits,
      incompatibleFeatures,
      compatibleFeatures: FIELDS.compatibleFeatures.get(data),
      headerSize,
      backingName,
      backingFormat: backingName === null ? null : backingFormatText,
      imageName,
      imageFormat,
    },
    oddities,
  }
}

function encodeFormat(path: string, field: string, text: string): Uint8Array {
  if (!/^[\x21-\x7e]*$/.test(text) || text.length > 15) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `${field} ${JSON.stringify(text)} for ${path} must be printable ASCII of at most 15 characters.`,
      { path, field, value: text },
    )
  }
  return Buffer.from(text, 'ascii')
}

/**
 * Encode `header` into a buffer of exactly `header_size` bytes: the fixed part, the backing
 * name at 76, the image name right after it, and zeros up to header_size.
 */
export function encodeHeader(header: AddCowHeader, path: string): Buffer {
  const headerSize = headerSizeFor(header.clusterBits)
  const buffer = Buffer.alloc(headerSize)
  const backing = header.backingName === null ? null : Buffer.from(header.backingName, 'utf8')
  const image = Buffer.from(header.imageName, 'utf8')
  if (image.length === 0) {
    throw new EngineError('BAD_ARGUMENT', `The image name for ${path} must not be empty.`, { path, field: 'image name' })
  }
  if (backing !== null && backing.length === 0) {
    throw new EngineError('BAD_ARGUMENT', `The backing name for ${path} must not be empty.`, { path, field: 'backing name' })
  }
  for (const [label, name] of [['backing name', header.backingName], ['image name', header.imageName]] as const) {
    if (name?.includes('\0')) {
      throw new EngineError('BAD_ARGUMENT', `The ${label} for ${path} must not contain a NUL byte.`, { path, field: label, value: name })
    }
  }
  if (backing !== null && !header.backingFormat) {
    throw new EngineError('BAD_ARGUMENT', `The backing format for ${path} must not be empty when there is a backing file.`, {
      path,
      field: 'backing format',
    })
  }
  const namesLength = (backing?.length ?? 0) + image.length
  // The reader wants each name to start at or before header_size - 2 (FORMATS.md §1); the image
  // name starts right after the backing name.
  const imageOffset = FIXED_HEADER_SIZE + (backing?.length ?? 0)
  if (FIXED_HEADER_SIZE + namesLength > headerSize || imageOffset > headerSize - 2) {
    throw new EngineError(
      'BAD_ARGUMENT',
      imageOffset > headerSize - 2 && FIXED_HEADER_SIZE + namesLength <= headerSize
        ? `The names for ${path} would put the image name at offset ${imageOffset}, past ${headerSize - 2} (header_size - 2); shorten the backing name.`
        : `The names for ${path} take ${namesLength} bytes; at most ${headerSize - FIXED_HEADER_SIZE} fit in a ${headerSize}-byte header.`,
      { path, field: 'names', value: namesLength },
    )
  }
  FIELDS.magic.put(buffer, ADD_COW_MAGIC)
  let cursor = FIXED_HEADER_SIZE
  if (backing !== null) {
    FIELDS.backingNameOffset.put(buffer, cursor)
    FIELDS.backingNameLength.put(buffer, backing.length)
    buffer.set(backing, cursor)
    cursor += backing.length
  }
  FIELDS.imageNameOffset.put(buffer, cursor)
  FIELDS.imageNameLength.put(buffer, image.length)
  buffer.set(image, cursor)
  FIELDS.clusterBits.put(buffer, header.clusterBits)
  FIELDS.incompatibleFeatures.put(buffer, header.incompatibleFeatures)
  FIELDS.compatibleFeatures.put(buffer, header.compatibleFeatures)
  FIELDS.headerSize.put(buffer, headerSize)
  if (header.backingName !== null) {
    FIELDS.backingFormat.put(buffer, encodeFormat(path, 'backing format', header.backingFormat ?? ''))
  }
  const imageFormat = encodeFormat(path, 'image format', header.imageFormat)
  if (imageFormat.length === 0) {
    throw new EngineError('BAD_ARGUMENT', `The image format for ${path} must not be empty.`, { path, field: 'image format' })
  }
  FIELDS.imageFormat.put(buffer, imageFormat)
  return buffer
}

/** Geometry derived from the cluster size and the virtual size (the image file's length). */
export interface BitmapGeometry {
  clusterSize: number
  clusters: number
  /** Bytes of bitmap that carry bits: ceil(clusters / 8). */
  bitmapBytes: number
  /** Bytes the bitmap area takes on disk: bitmapBytes rounded up to a whole cluster. */
  bitmapArea: number
  /** The add-cow file length the layout prescribes. */
  fileLength: number
}

/** Bitmap maths for a virtual size (FORMATS.md §1, "Bitmap"). */
export function geometry(clusterBits: number, virtualSize: number): BitmapGeometry {
  const clusterSize = 2 ** clusterBits
  const clusters = Math.ceil(virtualSize / clusterSize)
  const bitmapBytes = Math.ceil(clusters / 8)
  const bitmapArea = Math.ceil(bitmapBytes / clusterSize) * clusterSize
  return {
    clusterSize,
    clusters,
    bitmapBytes,
    bitmapArea,
    fileLength: headerSizeFor(clusterBits) + bitmapArea,
  }
}
