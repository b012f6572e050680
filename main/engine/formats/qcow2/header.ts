import { bounded, EngineError, quote, SAFETY_LIMIT } from '../../errors'
import { bytes, decodeUtf8, safeNumber, u32, u64, type FieldSpec } from '../../struct'
import { QCOW2_MAGIC } from './format'

/**
 * The qcow2 header (QEMU's docs/interop/qcow2.txt, versions 2 and 3), described once with its
 * byte offsets. All integers are big-endian. Version 2 headers end at byte 72; version 3
 * headers are `header_length` bytes long (at least 104).
 */
export const FIELDS = {
  /** 0-3: "QFI\xfb". */
  magic: u32('magic', 0, false),
  /** 4-7: 2 or 3. */
  version: u32('version', 4, false),
  /** 8-15: offset of the backing file name (not NUL-terminated) in the first cluster; 0 = none. */
  backingFileOffset: u64('backing_file_offset', 8, false),
  /** 16-19: length of the backing file name, at most 1023. */
  backingFileSize: u32('backing_file_size', 16, false),
  /** 20-23: 9..21 (512 B .. 2 MiB clusters); at least 14 with extended L2 entries. */
  clusterBits: u32('cluster_bits', 20, false),
  /** 24-31: virtual size in bytes. */
  size: u64('size', 24, false),
  /** 32-35: 0 none, 1 AES, 2 LUKS. */
  cryptMethod: u32('crypt_method', 32, false),
  /** 36-39: entries of the active L1 table. */
  l1Size: u32('l1_size', 36, false),
  /** 40-47: cluster-aligned offset of the active L1 table. */
  l1TableOffset: u64('l1_table_offset', 40, false),
  /** 48-55: cluster-aligned offset of the refcount table. */
  refcountTableOffset: u64('refcount_table_offset', 48, false),
  /** 56-59: clusters the refcount table occupies. */
  refcountTableClusters: u32('refcount_table_clusters', 56, false),
  /** 60-63: internal snapshots. */
  nbSnapshots: u32('nb_snapshots', 60, false),
  /** 64-71: cluster-aligned offset of the snapshot table. */
  snapshotsOffset: u64('snapshots_offset', 64, false),
  /** 72-79 (v3): unknown bits refuse the open. */
  incompatibleFeatures: u64('incompatible_features', 72, false),
  /** 80-87 (v3): unknown bits are ignored. */
  compatibleFeatures: u64('compatible_features', 80, false),
  /** 88-95 (v3): a writer must clear the bits it does not understand before writing. */
  autoclearFeatures: u64('autoclear_features', 88, false),
  /** 96-99 (v3): refcount_bits = 1 << refcount_order; 4 for version 2. */
  refcountOrder: u32('refcount_order', 96, false),
  /** 100-103 (v3): header length, a multiple of 8, at least 104. */
  headerLength: u32('header_length', 100, false),
  /** 104 (v3, present when header_length > 104): 0 zlib/deflate, 1 zstd. */
  compressionType: u8('compression_type', 104),
} as const

/** One header extension's fixed part (type and data length), big-endian, at the extension's start. */
export const EXTENSION_FIELDS = {
  type: u32('header extension type', 0, false),
  length: u32('header extension length', 4, false),
} as const

/** One entry of the feature name table extension (48 bytes). */
export const FEATURE_NAME_FIELDS = {
  type: u8('feature type', 0),
  bit: u8('feature bit', 1),
  name: bytes('feature name', 2, 46),
} as const

export { QCOW2_MAGIC }
export const V2_HEADER_LENGTH = 72
export const V3_MIN_HEADER_LENGTH = 104
export const MIN_CLUSTER_BITS = 9
/** QEMU's implementation limit (2 MiB clusters). */
export const MAX_CLUSTER_BITS = 21
/** QEMU's limit on the active L1 table (QCOW_MAX_L1_SIZE). */
export const MAX_L1_BYTES = 32 * 1024 * 1024
/** QEMU's limit on the refcount table (QCOW_MAX_REFTABLE_SIZE). */
export const MAX_REFCOUNT_TABLE_BYTES = 8 * 1024 * 1024
/** QEMU's limit on internal snapshots. */
export const MAX_SNAPSHOTS = 65536
/** Longest backing file name the format allows. */
export const MAX_BACKING_NAME = 1023

export const EXTENSION_END = 0x00000000
export const EXTENSION_BACKING_FORMAT = 0xe2792aca
export const EXTENSION_FEATURE_NAMES = 0x6803f857
export const EXTENSION_BITMAPS = 0x23852875
export const EXTENSION_ENCRYPTION = 0x0537be77
export const EXTENSION_DATA_FILE = 0x44415441

export const INCOMPATIBLE_DIRTY = 1n << 0n
export const INCOMPATIBLE_CORRUPT = 1n << 1n
export const INCOMPATIBLE_DATA_FILE = 1n << 2n
export const INCOMPATIBLE_COMPRESSION_TYPE = 1n << 3n
export const INCOMPATIBLE_EXTENDED_L2 = 1n << 4n
const KNOWN_INCOMPATIBLE = 0x1fn
export const COMPATIBLE_LAZY_REFCOUNTS = 1n << 0n

/** Compression of compressed clusters. */
export type CompressionType = 'deflate' | 'zstd'

/** A header extension found in the first cluster. */
export interface HeaderExtension {
  type: number
  /** File offset of the extension's data. */
  offset: number
  length: number
}

/** A parsed and validated qcow2 header. */
export interface Qcow2Header {
  version: 2 | 3
  clusterBits: number
  clusterSize: number
  size: number
  backingName: string | null
  /** From the backing format extension; null when the image does not record it. */
  backingFormat: string | null
  l1Size: number
  l1TableOffset: number
  refcountTableOffset: number
  refcountTableClusters: number
  nbSnapshots: number
  snapshotsOffset: number
  incompatibleFeatures: bigint
  compatibleFeatures: bigint
  autoclearFeatures: bigint
  refcountOrder: number
  headerLength: number
  compressionType: CompressionType
  extendedL2: boolean
  /** Incompatible bit 0: refcounts may be inconsistent. */
  dirty: boolean
  /** Incompatible bit 1: some structure may be corrupt; never write. */
  corrupt: boolean
  /** Feature names from the feature name table, keyed `type:bit` (0 incompatible, 1 compatible, 2 autoclear). */
  featureNames: Map<string, string>
  extensions: HeaderExtension[]
}

/** An unsigned 8-bit field (the struct helpers cover 16 bits and up). */
function u8(name: string, offset: number): FieldSpec<number> {
  return {
    name,
    offset,
    length: 1,
    get: (buffer, base = 0) => buffer[base + offset] ?? 0,
    put: (buffer, value, base = 0) => {
      buffer[base + offset] = value
    },
  }
}

function corruptHeader(path: string, field: string, value: unknown, rule: string): EngineError {
  return new EngineError(
    'CORRUPT_HEADER',
    `qcow2 ${field} ${bounded(String(value), SAFETY_LIMIT)} in ${path} is invalid: ${rule}.`,
    {
      path,
      field,
      value,
    },
  )
}

function hex(value: bigint | number): string {
  return `0x${value.toString(16)}`
}

function bitList(mask: bigint, names: Map<string, string>, type: number): string {
  const bits: string[] = []
  for (let bit = 0n; bit < 64n; bit++) {
    if ((mask >> bit) & 1n) {
      const name = names.get(`${type}:${bit}`)
      bits.push(name ? `bit ${bit} (${name})` : `bit ${bit}`)
    }
  }
  return bits.join(', ')
}

/** Read a u64 offset field as a safe number that is a multiple of the cluster size. */
function alignedOffset(
  data: Uint8Array,
  field: FieldSpec<bigint>,
  path: string,
  clusterSize: number,
): number {
  const raw = field.get(data)
  const value = safeNumber(raw, path, `qcow2 ${field.name}`)
  if (value % clusterSize !== 0) {
    throw corruptHeader(
      path,
      field.name,
      hex(raw),
      `it must be a multiple of the cluster size ${clusterSize}`,
    )
  }
  return value
}

function decodeText(path: string, field: string, raw: Uint8Array): string {
  const text = decodeUtf8(raw)
  if (text === null)
    throw corruptHeader(path, field, `(${raw.length} bytes)`, 'it is not valid UTF-8')
  if (text.includes('\0'))
    throw corruptHeader(path, field, quote(text, '"'), 'it contains a NUL byte')
  return text
}

/**
 * Parse and validate a qcow2 header. `data` holds the start of the file, at least its first
 * cluster (or the whole file when shorter); `fileLength` is the file's length.
 *
 * Refuses, with an EngineError naming the file, the field and the value: a wrong magic,
 * versions other than 2 and 3, encryption, an external data file, unknown incompatible
 * features (named from the feature table when it has them), unknown compression types, and
 * every offset, length or size outside its bounds (L1 and refcount tables included).
 */
export function parseQcow2Header(data: Uint8Array, path: string, fileLength: number): Qcow2Header {
  if (data.length < V2_HEADER_LENGTH) {
    throw new EngineError(
      'CORRUPT_HEADER',
      `${path} is ${data.length} bytes long, too short for a ${V2_HEADER_LENGTH}-byte qcow2 header.`,
      { path, field: 'file length', value: data.length },
    )
  }
  const magic = FIELDS.magic.get(data)
  if (magic !== QCOW2_MAGIC) {
    throw new EngineError(
      'BAD_MAGIC',
      `${path} is not a qcow2 file: magic ${hex(magic)} is not ${hex(QCOW2_MAGIC)} ("QFI\\xfb").`,
      { path, field: 'magic', value: magic },
    )
  }
  const version = FIELDS.version.get(data)
  if (version !== 2 && version !== 3) {
    throw new EngineError(
      'UNSUPPORTED_FEATURE',
      `${path} is qcow2 version ${version}; only versions 2 and 3 are supported.`,
      { path, field: 'version', value: version },
    )
  }
  const clusterBits = FIELDS.clusterBits.get(data)
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    throw corruptHeader(
      path,
      'cluster_bits',
      clusterBits,
      `it must lie in ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`,
    )
  }
  const clusterSize = 2 ** clusterBits
  let headerLength = V2_HEADER_LENGTH
  let incompatibleFeatures = 0n
  let compatibleFeatures = 0n
  let autoclearFeatures = 0n
  let refcountOrder = 4
  if (version === 3) {
    if (data.length < V3_MIN_HEADER_LENGTH) {
      throw new EngineError(
        'CORRUPT_HEADER',
        `${path} is ${data.length} bytes long, too short for a ${V3_MIN_HEADER_LENGTH}-byte qcow2 version 3 header.`,
        { path, field: 'file length', value: data.length },
      )
    }
    headerLength = FIELDS.headerLength.get(data)
    if (
      headerLength < V3_MIN_HEADER_LENGTH ||
      headerLength % 8 !== 0 ||
      headerLength > clusterSize
    ) {
      throw corruptHeader(
        path,
        'header_length',
        headerLength,
        `it must be a multiple of 8 in ${V3_MIN_HEADER_LENGTH}..${clusterSize} (the cluster size)`,
      )
    }
    if (data.length < headerLength) {
      throw new EngineError(
        'CORRUPT_HEADER',
        `${path} is ${data.length} bytes long, shorter than its qcow2 header_length ${headerLength}.`,
        { path, field: 'file length', value: data.length },
      )
    }
    incompatibleFeatures = FIELDS.incompatibleFeatures.get(data)
    compatibleFeatures = FIELDS.compatibleFeatures.get(data)
    autoclearFeatures = FIELDS.autoclearFeatures.get(data)
    refcountOrder = FIELDS.refcountOrder.get(data)
    if (refcountOrder > 6) {
      throw corruptHeader(
        path,
        'refcount_order',
        refcountOrder,
        'it must be at most 6 (64-bit refcounts)',
      )
    }
  }

  // Extensions: from the end of the header to the backing file name (or the end of cluster 0).
  const backingOffsetRaw = FIELDS.backingFileOffset.get(data)
  if (backingOffsetRaw > BigInt(clusterSize)) {
    throw corruptHeader(
      path,
      'backing_file_offset',
      hex(backingOffsetRaw),
      `the name must lie in the first cluster (${clusterSize} bytes)`,
    )
  }
  const backingOffset = Number(backingOffsetRaw)
  const extensionsEnd = backingOffset > 0 ? backingOffset : clusterSize
  const featureNames = new Map<string, string>()
  const extensions: HeaderExtension[] = []
  let backingFormat: string | null = null
  for (let cursor = headerLength; cursor < extensionsEnd;) {
    if (cursor + 8 > extensionsEnd || cursor + 8 > data.length) {
      throw corruptHeader(
        path,
        'header extension at offset',
        cursor,
        `its 8-byte type and length run past ${extensionsEnd}`,
      )
    }
    const type = EXTENSION_FIELDS.type.get(data, cursor)
    const length = EXTENSION_FIELDS.length.get(data, cursor)
    if (type === EXTENSION_END) break
    const start = cursor + 8
    if (length > extensionsEnd - start || start + length > data.length) {
      throw corruptHeader(
        path,
        `header extension ${hex(type)} length`,
        length,
        `the extension at offset ${cursor} would run past ${extensionsEnd}`,
      )
    }
    extensions.push({ type, offset: start, length })
    const body = data.subarray(start, start + length)
    if (type === EXTENSION_BACKING_FORMAT) {
      if (length === 0 || length > 15) {
        throw corruptHeader(
          path,
          'backing format extension length',
          length,
          'it must be 1..15 bytes',
        )
      }
      backingFormat = Buffer.from(body).toString('latin1')
      if (!/^[\x21-\x7e]+$/.test(backingFormat)) {
        throw corruptHeader(
          path,
          'backing format',
          quote(backingFormat, '"'),
          'it is not printable ASCII',
        )
      }
    } else if (type === EXTENSION_FEATURE_NAMES) {
      for (let entry = 0; entry + 48 <= length; entry += 48) {
        const raw = FEATURE_NAME_FIELDS.name.get(body, entry)
        const nul = raw.indexOf(0)
        const name = Buffer.from(raw.subarray(0, nul === -1 ? raw.length : nul)).toString('latin1')
        featureNames.set(
          `${FEATURE_NAME_FIELDS.type.get(body, entry)}:${FEATURE_NAME_FIELDS.bit.get(body, entry)}`,
          name,
        )
      }
    }
    cursor = start + Math.ceil(length / 8) * 8
  }

  const unknown = incompatibleFeatures & ~KNOWN_INCOMPATIBLE
  if (unknown !== 0n) {
    throw new EngineError(
      'UNSUPPORTED_FEATURE',
      `${path} uses qcow2 incompatible features this tool does not know: ${bitList(unknown, featureNames, 0)}; it cannot be opened safely.`,
      { path, field: 'incompatible_features', value: hex(incompatibleFeatures) },
    )
  }
  const cryptMethod = FIELDS.cryptMethod.get(data)
  if (cryptMethod !== 0) {
    const method = cryptMethod === 1 ? 'AES' : cryptMethod === 2 ? 'LUKS' : `method ${cryptMethod}`
    throw new EngineError(
      'UNSUPPORTED_FEATURE',
      `${path} is an encrypted qcow2 image (crypt_method ${cryptMethod}, ${method}); encrypted images are not supported.`,
      { path, field: 'crypt_method', value: cryptMethod },
    )
  }
  if (incompatibleFeatures & INCOMPATIBLE_DATA_FILE) {
    throw new EngineError(
      'UNSUPPORTED_FEATURE',
      `${path} keeps its guest data in an external data file (qcow2 incompatible feature bit 2); external data files are not supported.`,
      { path, field: 'incompatible_features', value: hex(incompatibleFeatures) },
    )
  }
  let compressionType: CompressionType = 'deflate'
  const compressionField =
    headerLength > FIELDS.compressionType.offset ? FIELDS.compressionType.get(data) : 0
  if (incompatibleFeatures & INCOMPATIBLE_COMPRESSION_TYPE) {
    if (compressionField === 0) {
      throw corruptHeader(
        path,
        'compression_type',
        0,
        'the compression type feature bit is set, so it must be non-zero',
      )
    }
    if (compressionField !== 1) {
      throw new EngineError(
        'UNSUPPORTED_FEATURE',
        `${path} uses qcow2 compression type ${compressionField}; only 0 (deflate) and 1 (zstd) are supported.`,
        { path, field: 'compression_type', value: compressionField },
      )
    }
    compressionType = 'zstd'
  } else if (compressionField !== 0) {
    throw corruptHeader(
      path,
      'compression_type',
      compressionField,
      'it must be 0 unless the compression type feature bit is set',
    )
  }
  const extendedL2 = (incompatibleFeatures & INCOMPATIBLE_EXTENDED_L2) !== 0n
  if (extendedL2 && clusterBits < 14) {
    throw corruptHeader(
      path,
      'cluster_bits',
      clusterBits,
      'extended L2 entries need at least 14 (16 KiB clusters)',
    )
  }

  const size = safeNumber(FIELDS.size.get(data), path, 'qcow2 size')
  const l2Entries = clusterSize / (extendedL2 ? 16 : 8)
  const l1Size = FIELDS.l1Size.get(data)
  const needed = Math.ceil(size / (clusterSize * l2Entries))
  if (l1Size < needed) {
    throw corruptHeader(
      path,
      'l1_size',
      l1Size,
      `the virtual size ${size} needs at least ${needed} L1 entries`,
    )
  }
  if (l1Size * 8 > MAX_L1_BYTES) {
    throw new EngineError(
      'SIZE_LIMIT',
      `qcow2 l1_size ${l1Size} in ${path} makes an L1 table larger than ${MAX_L1_BYTES} bytes.`,
      { path, field: 'l1_size', value: l1Size },
    )
  }
  const l1TableOffset = alignedOffset(data, FIELDS.l1TableOffset, path, clusterSize)
  if (l1Size > 0 && (l1TableOffset === 0 || l1TableOffset + l1Size * 8 > fileLength)) {
    throw new EngineError(
      'CORRUPT_IMAGE',
      `The qcow2 L1 table of ${path} (l1_table_offset ${l1TableOffset}, ${l1Size} entries) lies ${l1TableOffset === 0 ? 'on the header' : `past the end of the ${fileLength}-byte file`}.`,
      { path, field: 'l1_table_offset', value: l1TableOffset },
    )
  }
  const refcountTableOffset = alignedOffset(data, FIELDS.refcountTableOffset, path, clusterSize)
  const refcountTableClusters = FIELDS.refcountTableClusters.get(data)
  if (refcountTableClusters === 0 || refcountTableOffset === 0) {
    throw corruptHeader(
      path,
      'refcount_table_clusters',
      refcountTableClusters,
      'the image must have a refcount table',
    )
  }
  if (refcountTableClusters * clusterSize > MAX_REFCOUNT_TABLE_BYTES) {
    throw new EngineError(
      'SIZE_LIMIT',
      `qcow2 refcount_table_clusters ${refcountTableClusters} in ${path} makes a refcount table larger than ${MAX_REFCOUNT_TABLE_BYTES} bytes.`,
      { path, field: 'refcount_table_clusters', value: refcountTableClusters },
    )
  }
  const nbSnapshots = FIELDS.nbSnapshots.get(data)
  if (nbSnapshots > MAX_SNAPSHOTS) {
    throw corruptHeader(path, 'nb_snapshots', nbSnapshots, `it must be at most ${MAX_SNAPSHOTS}`)
  }
  const snapshotsOffset =
    nbSnapshots > 0 ? alignedOffset(data, FIELDS.snapshotsOffset, path, clusterSize) : 0

  let backingName: string | null = null
  if (backingOffset > 0) {
    const length = FIELDS.backingFileSize.get(data)
    const limit = Math.min(MAX_BACKING_NAME, clusterSize - backingOffset)
    if (length > limit) {
      throw corruptHeader(
        path,
        'backing_file_size',
        length,
        `the name at offset ${backingOffset} may take at most ${limit} bytes`,
      )
    }
    if (backingOffset < headerLength) {
      throw corruptHeader(
        path,
        'backing_file_offset',
        backingOffset,
        `it overlaps the ${headerLength}-byte header`,
      )
    }
    if (backingOffset + length > data.length) {
      throw new EngineError(
        'CORRUPT_HEADER',
        `The qcow2 backing file name of ${path} (offset ${backingOffset}, ${length} bytes) runs past the end of the file.`,
        { path, field: 'backing_file_size', value: length },
      )
    }
    if (length > 0)
      backingName = decodeText(
        path,
        'backing file name',
        data.subarray(backingOffset, backingOffset + length),
      )
  }
  if (backingName === null) backingFormat = null

  return {
    version,
    clusterBits,
    clusterSize,
    size,
    backingName,
    backingFormat,
    l1Size,
    l1TableOffset,
    refcountTableOffset,
    refcountTableClusters,
    nbSnapshots,
    snapshotsOffset,
    incompatibleFeatures,
    compatibleFeatures,
    autoclearFeatures,
    refcountOrder,
    headerLength,
    compressionType,
    extendedL2,
    dirty: (incompatibleFeatures & INCOMPATIBLE_DIRTY) !== 0n,
    corrupt: (incompatibleFeatures & INCOMPATIBLE_CORRUPT) !== 0n,
    featureNames,
    extensions,
  }
}
