import { bounded, EngineError, quote, SAFETY_LIMIT } from '../../errors'
import { bytes, decodeUtf8, u32, u64 } from '../../struct'
import { ADD_COW_MAGIC } from './format'

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

export { ADD_COW_MAGIC }
/** Bytes of the fixed part of the header; names start here. */
export const FIXED_HEADER_SIZE = 76
export const MIN_CLUSTER_BITS = 12
export const MAX_CLUSTER_BITS = 21
export const DEFAULT_CLUSTER_BITS = 16
/** Largest bitmap held in memory: 2^32 clusters (16 TiB at 4 KiB, 8 PiB at 2 MiB). */
export const MAX_BITMAP_BYTES = 512 * 1024 * 1024
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

/**
 * One thing wrong with a header, found by {@link inspectHeader}: what `check` reports and, for
 * what makes the file unreadable, the error an open throws. Both come from the same rule.
 */
export interface HeaderIssue {
  /** Stable check code ('cluster-bits', 'header-padding', ...; docs/operations.md). */
  code: string
  /** `corruption`: the layout is broken; `error`: valid, but this tool cannot go on; `warning`. */
  severity: 'corruption' | 'error' | 'warning'
  field: string
  /** The offending value as check reports it. */
  value: string | number
  /** One sentence naming the file, the field and the value. */
  message: string
  /** Byte offset of the field (or of the first offending byte) in the file. */
  offset?: number
  expected?: string | number
  /** How many bytes the issue covers (padding). */
  count?: number
  /** Bytes `check -r all` zeroes to repair it (non-zero padding). */
  zeroBytes?: number[]
  /** The error a reader throws for it (the first one found is thrown); absent: not fatal. */
  error?: EngineError
}

/** What {@link inspectHeader} found: every issue, and what could be read despite them. */
export interface HeaderInspection {
  /** The whole header, when no issue is fatal to a reader. */
  header: AddCowHeader | null
  /** The fixed fields everything else depends on, when they are valid. */
  fixed: Pick<AddCowHeader, 'clusterBits' | 'headerSize' | 'compatibleFeatures'> | null
  /** The names, when both are within bounds and decode. */
  names: { backing: string | null; image: string } | null
  /** The image format, when its field decodes. */
  imageFormat: string | null
  /** Whether a backing name is stored (offset and length non-zero). */
  hasBacking: boolean
  issues: HeaderIssue[]
  oddities: HeaderOddities
}

/** Offsets listed in a message before "…". */
const SHOWN = 8

/** The first offsets of a list, for a message ("1, 2, … (9 in all)"). */
export function listOffsets(values: number[], total = values.length): string {
  return values.slice(0, SHOWN).join(', ') + (total > SHOWN ? `, … (${total} in all)` : '')
}

/**
 * Validate an add-cow header and report every problem, without stopping at the first one: the
 * single validation of the layout, which {@link parseHeader} (every open) and `check` share.
 * `data` holds the first bytes of the file (at least `header_size` of them when it is that
 * long); `fileLength` is the file's length.
 *
 * Fatal issues come first in the order a reader meets them: length, magic, incompatible
 * features, cluster_bits, header_size, then names and formats. After a broken fixed field
 * nothing else is looked at; after a broken name the formats still are.
 */
export function inspectHeader(
  data: Uint8Array,
  path: string,
  rules: HeaderRules = CURRENT_RULES,
  fileLength = data.length,
): HeaderInspection {
  const issues: HeaderIssue[] = []
  const oddities: HeaderOddities = { nonZeroPadding: [], formatPaddingDirty: [] }
  const done = (): HeaderInspection => ({
    header: null,
    fixed: null,
    names: null,
    imageFormat: null,
    hasBacking: false,
    issues,
    oddities,
  })
  const invalid = (
    code: string,
    field: string,
    value: string | number,
    rule: string,
    extra: Partial<HeaderIssue> & { errorValue?: unknown } = {},
  ): void => {
    const { errorValue, ...rest } = extra
    issues.push({
      code,
      severity: 'corruption',
      field,
      value,
      message: `${field} ${bounded(String(value), SAFETY_LIMIT)} in ${path} is invalid: ${rule}.`,
      error: new EngineError(
        'CORRUPT_HEADER',
        `${field} ${bounded(String(errorValue ?? value), SAFETY_LIMIT)} in ${path} is invalid: ${rule}.`,
        { path, field, value: errorValue ?? value },
      ),
      ...rest,
    })
  }

  if (fileLength < FIXED_HEADER_SIZE || data.length < FIXED_HEADER_SIZE) {
    invalid(
      'file-too-short',
      'file length',
      fileLength,
      `an add-cow file needs at least the ${FIXED_HEADER_SIZE}-byte fixed header`,
      {
        error: new EngineError(
          'CORRUPT_HEADER',
          `${path} is ${data.length} bytes long, too short for the ${FIXED_HEADER_SIZE}-byte add-cow header.`,
          { path, field: 'file length', value: data.length },
        ),
      },
    )
    return done()
  }
  const magic = FIELDS.magic.get(data)
  if (magic !== ADD_COW_MAGIC) {
    invalid(
      'magic',
      'magic',
      `0x${magic.toString(16).padStart(8, '0')}`,
      `it must be 0x${ADD_COW_MAGIC.toString(16)} ("ACOW")`,
      {
        offset: FIELDS.magic.offset,
        error: new EngineError(
          'BAD_MAGIC',
          `${path} is not an add-cow file: magic 0x${magic.toString(16).padStart(8, '0')} is not 0x${ADD_COW_MAGIC.toString(16)} ("ACOW").`,
          { path, field: 'magic', value: magic },
        ),
      },
    )
    return done()
  }
  const incompatible = FIELDS.incompatibleFeatures.get(data)
  if (incompatible !== 0n) {
    const hex = `0x${incompatible.toString(16)}`
    issues.push({
      code: 'incompatible-features',
      severity: 'error',
      field: 'incompatible features',
      value: hex,
      offset: FIELDS.incompatibleFeatures.offset,
      message: `${path} uses incompatible features ${hex} that this tool does not know, so it cannot check it.`,
      error: new EngineError(
        'UNSUPPORTED_FEATURE',
        `${path} uses incompatible features ${hex} that this tool does not know; it cannot be opened safely.`,
        { path, field: 'incompatible features', value: hex },
      ),
    })
    return done()
  }
  const clusterBits = FIELDS.clusterBits.get(data)
  if (clusterBits < rules.minClusterBits || clusterBits > MAX_CLUSTER_BITS) {
    invalid(
      'cluster-bits',
      'cluster_bits',
      clusterBits,
      `it must lie in ${rules.minClusterBits}..${MAX_CLUSTER_BITS}`,
      {
        offset: FIELDS.clusterBits.offset,
        expected: `${rules.minClusterBits}..${MAX_CLUSTER_BITS}`,
      },
    )
    return done()
  }
  const headerSize = FIELDS.headerSize.get(data)
  const expectedHeaderSize = headerSizeFor(clusterBits)
  if (headerSize !== expectedHeaderSize) {
    invalid(
      'header-size',
      'header_size',
      headerSize,
      `cluster_bits ${clusterBits} requires ${expectedHeaderSize}`,
      {
        offset: FIELDS.headerSize.offset,
        expected: expectedHeaderSize,
      },
    )
    return done()
  }
  if (fileLength < headerSize || data.length < headerSize) {
    invalid(
      'file-too-short',
      'file length',
      fileLength,
      `it is shorter than header_size ${headerSize}`,
      {
        expected: headerSize,
        error: new EngineError(
          'CORRUPT_HEADER',
          `${path} is ${data.length} bytes long, shorter than its header_size ${headerSize}.`,
          { path, field: 'file length', value: data.length },
        ),
      },
    )
    return done()
  }
  const compatibleFeatures = FIELDS.compatibleFeatures.get(data)
  const unknown = compatibleFeatures & ~FEATURE_ALL_ALLOCATED
  if (unknown !== 0n) {
    issues.push({
      code: 'unknown-compatible-features',
      severity: 'warning',
      field: 'compatible features',
      value: `0x${unknown.toString(16)}`,
      offset: FIELDS.compatibleFeatures.offset,
      message: `${path} sets compatible feature bits 0x${unknown.toString(16)} that this tool does not know; they are kept as they are.`,
    })
  }

  // Names: bounds, then text; a broken name stops the padding scan, not the format checks.
  let namesBroken = false
  const name = (
    label: 'backing' | 'image',
    offsetField: typeof FIELDS.imageNameOffset,
    lengthField: typeof FIELDS.imageNameLength,
  ): { range: [number, number] | null; text: string | null } => {
    const offset = offsetField.get(data)
    const length = lengthField.get(data)
    const code = `${label}-name-bounds`
    if (label === 'backing' && (offset === 0 || length === 0)) {
      if (offset !== length) {
        invalid(
          code,
          offset === 0 ? 'backing name length' : 'backing name offset',
          offset === 0 ? length : offset,
          'offset and length must both be 0 when there is no backing file',
          { offset: offsetField.offset },
        )
        namesBroken = true
      }
      return { range: null, text: null }
    }
    if (offset < FIXED_HEADER_SIZE || offset > headerSize - 2) {
      invalid(
        code,
        `${label} name offset`,
        offset,
        `it must lie in ${FIXED_HEADER_SIZE}..${headerSize - 2}`,
        {
          offset: offsetField.offset,
          expected: `${FIXED_HEADER_SIZE}..${headerSize - 2}`,
        },
      )
      namesBroken = true
      return { range: null, text: null }
    }
    if (length === 0 || offset + length > headerSize) {
      invalid(
        code,
        `${label} name length`,
        length,
        length === 0
          ? 'it must not be 0'
          : `offset ${offset} + length runs past header_size ${headerSize}`,
        { offset: lengthField.offset },
      )
      namesBroken = true
      return { range: null, text: null }
    }
    const raw = data.subarray(offset, offset + length)
    const text = decodeUtf8(raw)
    if (text === null || text.includes('\0')) {
      invalid(
        `${label}-name-encoding`,
        `${label} name`,
        `(${length} bytes at ${offset})`,
        text === null ? 'it is not valid UTF-8' : 'it contains a NUL byte',
        { offset, errorValue: text === null ? `(${length} bytes)` : quote(text, '"') },
      )
      namesBroken = true
      return { range: [offset, length], text: null }
    }
    return { range: [offset, length], text }
  }
  const backing = name('backing', FIELDS.backingNameOffset, FIELDS.backingNameLength)
  const image = name('image', FIELDS.imageNameOffset, FIELDS.imageNameLength)
  if (
    backing.range &&
    image.range &&
    image.range[0] < backing.range[0] + backing.range[1] &&
    backing.range[0] < image.range[0] + image.range[1]
  ) {
    invalid(
      'name-overlap',
      'image name offset',
      image.range[0],
      `it overlaps the backing name at ${backing.range[0]}..${backing.range[0] + backing.range[1] - 1}`,
      { offset: FIELDS.imageNameOffset.offset },
    )
    namesBroken = true
  }

  // Format fields: printable ASCII, NUL-terminated within 16 bytes, zero after the NUL.
  const format = (
    label: 'backing format' | 'image format',
    field: typeof FIELDS.backingFormat,
  ): string | null => {
    const raw = field.get(data)
    const code = label.replace(' ', '-')
    const nul = raw.indexOf(0)
    const end = nul === -1 ? raw.length : nul
    const text = raw.subarray(0, end)
    const broken =
      nul === -1 && !rules.formatMayFillField
        ? { bytes: raw, rule: 'it has no NUL terminator within 16 bytes' }
        : text.some((byte) => byte < 0x21 || byte > 0x7e)
          ? { bytes: text, rule: 'it is not printable ASCII' }
          : null
    if (broken) {
      invalid(code, label, quote(Buffer.from(broken.bytes).toString('latin1'), '"'), broken.rule, {
        offset: field.offset,
      })
      return null
    }
    const dirty: number[] = []
    raw.subarray(end).forEach((byte, index) => {
      if (byte !== 0) dirty.push(field.offset + end + index)
    })
    if (dirty.length > 0) {
      oddities.formatPaddingDirty.push(label)
      issues.push({
        code: 'header-padding',
        severity: 'corruption',
        field: label,
        offset: dirty[0]!,
        count: dirty.length,
        value: dirty.length,
        zeroBytes: dirty,
        message: `${label} in ${path} has ${dirty.length} non-zero byte(s) after its NUL terminator, at offsets ${listOffsets(dirty)}; they must be 0.`,
      })
    }
    return Buffer.from(text).toString('ascii')
  }
  const backingFormat = format('backing format', FIELDS.backingFormat)
  const imageFormat = format('image format', FIELDS.imageFormat)
  if (imageFormat === '') {
    invalid('image-format', 'image format', '""', 'it must not be empty', {
      offset: FIELDS.imageFormat.offset,
    })
  }
  if (!backing.range && backingFormat) {
    invalid(
      'backing-format',
      'backing format',
      quote(backingFormat, '"'),
      'it must be empty when there is no backing file',
      {
        offset: FIELDS.backingFormat.offset,
      },
    )
  }
  if (backing.range && backingFormat === '') {
    invalid('backing-format', 'backing format', '""', "it must name the backing file's format", {
      offset: FIELDS.backingFormat.offset,
    })
  }

  // Every byte from the fixed part to header_size that is not a name must be zero.
  const padding: number[] = []
  for (let offset = FIXED_HEADER_SIZE; offset < headerSize; offset++) {
    if (data[offset] === 0) continue
    const inBacking =
      backing.range !== null &&
      offset >= backing.range[0] &&
      offset < backing.range[0] + backing.range[1]
    const inImage =
      image.range !== null && offset >= image.range[0] && offset < image.range[0] + image.range[1]
    if (!inBacking && !inImage) padding.push(offset)
  }
  oddities.nonZeroPadding = padding.slice(0, 16)
  if (padding.length > 0 && !namesBroken) {
    issues.push({
      code: 'header-padding',
      severity: 'corruption',
      field: 'header padding',
      offset: padding[0]!,
      count: padding.length,
      value: padding.length,
      zeroBytes: padding,
      message: `The header of ${path} holds ${padding.length} non-zero byte(s) outside the names, at offsets ${listOffsets(padding)}; every byte up to header_size that is not a name must be 0.`,
    })
  }
  const fixed = { clusterBits, headerSize, compatibleFeatures }
  const names =
    namesBroken || image.text === null ? null : { backing: backing.text, image: image.text }
  const fatal = issues.some((issue) => issue.error)
  const header: AddCowHeader | null =
    fatal || !names || backingFormat === null || imageFormat === null
      ? null
      : {
          clusterBits,
          incompatibleFeatures: incompatible,
          compatibleFeatures,
          headerSize,
          backingName: names.backing,
          backingFormat: names.backing === null ? null : backingFormat,
          imageName: names.image,
          imageFormat,
        }
  return {
    header,
    fixed,
    names,
    imageFormat,
    hasBacking: backing.range !== null,
    issues,
    oddities,
  }
}

/**
 * Parse and validate an add-cow header. `data` must hold at least the first `header_size`
 * bytes of the file (or all of it if shorter; a short file is reported as truncated).
 *
 * Refuses what the reference refuses (magic, incompatible bits, cluster_bits, header_size) and
 * also every name or format outside its bounds: the first fatal issue {@link inspectHeader}
 * finds is thrown. Non-zero padding is not fatal: it is returned in `oddities` for `check` to
 * report.
 */
export function parseHeader(
  data: Uint8Array,
  path: string,
  rules: HeaderRules = CURRENT_RULES,
): { header: AddCowHeader; oddities: HeaderOddities } {
  const inspection = inspectHeader(data, path, rules)
  const fatal = inspection.issues.find((issue) => issue.error)
  if (fatal?.error) throw fatal.error
  if (!inspection.header) {
    throw new EngineError('INTERNAL', `The header of ${path} could not be read.`, { path })
  }
  return { header: inspection.header, oddities: inspection.oddities }
}

/**
 * The open-time rule on the image format: add-cow image files are raw. Returns the issue (an
 * `error`: a valid file this tool cannot use), or null.
 */
export function imageFormatIssue(path: string, imageFormat: string): HeaderIssue | null {
  if (imageFormat === '' || imageFormat === 'raw') return null
  const message = `Image format ${quote(imageFormat)} in ${path} is not supported; add-cow image files are raw.`
  return {
    code: 'image-format',
    severity: 'error',
    field: 'image format',
    value: imageFormat,
    offset: FIELDS.imageFormat.offset,
    message,
    error: new EngineError('UNSUPPORTED_FORMAT', message, {
      path,
      field: 'image format',
      value: imageFormat,
    }),
  }
}

function encodeFormat(path: string, field: string, text: string): Uint8Array {
  if (!/^[\x21-\x7e]*$/.test(text) || text.length > 15) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `${field} ${quote(text, '"')} for ${path} must be printable ASCII of at most 15 characters.`,
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
    throw new EngineError('BAD_ARGUMENT', `The image name for ${path} must not be empty.`, {
      path,
      field: 'image name',
    })
  }
  if (backing !== null && backing.length === 0) {
    throw new EngineError('BAD_ARGUMENT', `The backing name for ${path} must not be empty.`, {
      path,
      field: 'backing name',
    })
  }
  for (const [label, name] of [
    ['backing name', header.backingName],
    ['image name', header.imageName],
  ] as const) {
    if (name?.includes('\0')) {
      throw new EngineError(
        'BAD_ARGUMENT',
        `The ${label} for ${path} must not contain a NUL byte.`,
        { path, field: label, value: name },
      )
    }
  }
  if (backing !== null && !header.backingFormat) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `The backing format for ${path} must not be empty when there is a backing file.`,
      {
        path,
        field: 'backing format',
      },
    )
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
    FIELDS.backingFormat.put(
      buffer,
      encodeFormat(path, 'backing format', header.backingFormat ?? ''),
    )
  }
  const imageFormat = encodeFormat(path, 'image format', header.imageFormat)
  if (imageFormat.length === 0) {
    throw new EngineError('BAD_ARGUMENT', `The image format for ${path} must not be empty.`, {
      path,
      field: 'image format',
    })
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
