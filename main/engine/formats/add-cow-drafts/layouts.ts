import { bounded, EngineError, quote, SAFETY_LIMIT } from '../../errors'
import { decodeUtf8, safeNumber } from '../../struct'
import { parseHeader, type HeaderRules } from '../add-cow/header'
import {
  looksLikeBigEndianDraft,
  looksLikeV12,
  SECTOR_SIZE,
  V12_CLUSTER_SIZE,
  V12_FIELDS,
  V12_FIXED_SIZE,
  V12_MAX_HEADER_PAGES,
  V3_BITMAP_OFFSET,
  V3_FIELDS,
  V7_BITMAP_OFFSET,
  V7_RESERVED,
  type DraftLayout,
} from './format'

/**
 * The earlier add-cow draft layouts (FORMATS.md §2), each header described once with its byte
 * offsets. They are read (and upgraded to the current layout), never written.
 *
 * - V18 (2013): the current layout, but cluster_bits may be 9..21 and the format fields may
 *   fill all 16 bytes without a NUL; parsed by the current header parser with V18 rules.
 * - V12 (2012): "ADD_COW\xff", little-endian, names by offset and length, 64 KiB clusters.
 * - v3 and v7 (2011/2012): "ADD_COW\xff", big-endian, fixed 1024-byte name fields, one bit per
 *   512-byte sector; v3 stores the virtual size, v7 reserves that area.
 *
 * In every layout the guest data lives in the image file at guest offsets, and unallocated
 * ranges read from the backing file.
 */

/** The fields V18 reads differently from the current layout. */
export const V18_RULES: HeaderRules = { minClusterBits: 9, formatMayFillField: true }

/** What every draft layout records, in one shape. */
export interface DraftHeader {
  layout: DraftLayout
  /** Bytes per bitmap bit. */
  unit: number
  bitmapOffset: number
  /** Virtual size stored in the header (v3 only); the others take the image file's length. */
  storedSize: number | null
  backingName: string | null
  /** Null when the layout does not record it (or records it empty). */
  backingFormat: string | null
  imageName: string
  imageFormat: string
  allAllocated: boolean
}

function corrupt(
  path: string,
  layout: string,
  field: string,
  value: unknown,
  rule: string,
): EngineError {
  return new EngineError(
    'CORRUPT_HEADER',
    `${layout} ${field} ${bounded(String(value), SAFETY_LIMIT)} in ${path} is invalid: ${rule}.`,
    {
      path,
      field,
      value,
    },
  )
}

function tooShort(path: string, length: number, needed: number, layout: string): EngineError {
  return new EngineError(
    'CORRUPT_HEADER',
    `${path} is ${length} bytes long, too short for the ${needed}-byte ${layout} header.`,
    { path, field: 'file length', value: length },
  )
}

function decodeName(path: string, layout: string, field: string, raw: Uint8Array): string {
  const text = decodeUtf8(raw)
  if (text === null)
    throw corrupt(path, layout, field, `(${raw.length} bytes)`, 'it is not valid UTF-8')
  if (text.includes('\0'))
    throw corrupt(path, layout, field, quote(text, '"'), 'it contains a NUL byte')
  return text
}

/** A NUL-padded fixed field: the text before the first NUL, and zeros after it. */
function decodePadded(
  path: string,
  layout: string,
  field: string,
  raw: Uint8Array,
  needsNul: boolean,
): string {
  const nul = raw.indexOf(0)
  if (nul === -1 && needsNul)
    throw corrupt(path, layout, field, `(${raw.length} bytes)`, 'it has no NUL terminator')
  const end = nul === -1 ? raw.length : nul
  if (raw.subarray(end).some((byte) => byte !== 0)) {
    throw corrupt(
      path,
      layout,
      field,
      quote(Buffer.from(raw.subarray(0, end)).toString('latin1'), '"'),
      'bytes after its NUL are not zero',
    )
  }
  return decodeName(path, layout, field, raw.subarray(0, end))
}

function decodeFormat(path: string, layout: string, field: string, raw: Uint8Array): string {
  const text = decodePadded(path, layout, field, raw, false)
  if (!/^[\x21-\x7e]*$/.test(text))
    throw corrupt(path, layout, field, quote(text, '"'), 'it is not printable ASCII')
  return text
}

// ---- V18 ---------------------------------------------------------------------------------------

/** Parse a V18 header with the current parser's V18 rules. */
export function parseV18(data: Uint8Array, path: string): DraftHeader {
  const { header } = parseHeader(data, path, V18_RULES)
  return {
    layout: 'add-cow-v18',
    unit: 2 ** header.clusterBits,
    bitmapOffset: header.headerSize,
    storedSize: null,
    backingName: header.backingName,
    backingFormat: header.backingFormat,
    imageName: header.imageName,
    imageFormat: header.imageFormat,
    allAllocated: (header.compatibleFeatures & 1n) !== 0n,
  }
}

// ---- V12 ---------------------------------------------------------------------------------------

/** Parse and validate a V12 header; `data` holds at least the whole header (or the whole file). */
export function parseV12(data: Uint8Array, path: string): DraftHeader {
  const layout = 'add-cow V12'
  if (data.length < V12_FIXED_SIZE) throw tooShort(path, data.length, V12_FIXED_SIZE, layout)
  if (!looksLikeV12(data)) {
    throw new EngineError('BAD_MAGIC', `${path} is not an ${layout} file (magic or version).`, {
      path,
      field: 'magic',
    })
  }
  const features = V12_FIELDS.features.get(data)
  if ((features & ~1n) !== 0n) {
    throw new EngineError(
      'UNSUPPORTED_FEATURE',
      `${path} uses ${layout} features 0x${features.toString(16)} that this tool does not know.`,
      { path, field: 'features', value: `0x${features.toString(16)}` },
    )
  }
  const pages = V12_FIELDS.headerPages.get(data)
  if (pages < 1 || pages > V12_MAX_HEADER_PAGES) {
    throw corrupt(path, layout, 'header pages', pages, `it must lie in 1..${V12_MAX_HEADER_PAGES}`)
  }
  const headerSize = pages * 4096
  if (data.length < headerSize) throw tooShort(path, data.length, headerSize, layout)
  const name = (
    label: string,
    offset: number,
    length: number,
    required: boolean,
  ): string | null => {
    if (offset === 0 && length === 0 && !required) return null
    if (offset < V12_FIXED_SIZE || offset >= headerSize) {
      throw corrupt(
        path,
        layout,
        `${label} name offset`,
        offset,
        `it must lie in ${V12_FIXED_SIZE}..${headerSize - 1}`,
      )
    }
    if (length === 0 || offset + length > headerSize) {
      throw corrupt(
        path,
        layout,
        `${label} name length`,
        length,
        `it must be non-zero and end by the header size ${headerSize}`,
      )
    }
    return decodeName(path, layout, `${label} name`, data.subarray(offset, offset + length))
  }
  const backingName = name(
    'backing',
    V12_FIELDS.backingNameOffset.get(data),
    V12_FIELDS.backingNameLength.get(data),
    false,
  )
  const imageName = name(
    'image',
    V12_FIELDS.imageNameOffset.get(data),
    V12_FIELDS.imageNameLength.get(data),
    true,
  )
  const backingFormat = decodeFormat(
    path,
    layout,
    'backing format',
    V12_FIELDS.backingFormat.get(data),
  )
  const imageFormat = decodeFormat(path, layout, 'image format', V12_FIELDS.imageFormat.get(data))
  return {
    layout: 'add-cow-v12',
    unit: V12_CLUSTER_SIZE,
    bitmapOffset: headerSize,
    storedSize: null,
    backingName,
    backingFormat: backingName === null || backingFormat === '' ? null : backingFormat,
    imageName: imageName ?? '',
    imageFormat: imageFormat === '' ? 'raw' : imageFormat,
    allAllocated: (features & 1n) !== 0n,
  }
}

// ---- v3 and v7 ---------------------------------------------------------------------------------

/** Parse a v3 or v7 header. */
export function parseV3orV7(
  data: Uint8Array,
  path: string,
  layout: 'add-cow-v3' | 'add-cow-v7',
): DraftHeader {
  const label = layout === 'add-cow-v3' ? 'add-cow v3' : 'add-cow v7'
  const bitmapOffset = layout === 'add-cow-v3' ? V3_BITMAP_OFFSET : V7_BITMAP_OFFSET
  if (data.length < bitmapOffset) throw tooShort(path, data.length, bitmapOffset, label)
  if (!looksLikeBigEndianDraft(data)) {
    throw new EngineError('BAD_MAGIC', `${path} is not an ${label} file (magic or version).`, {
      path,
      field: 'magic',
    })
  }
  if (layout === 'add-cow-v7') {
    const reserved = V7_RESERVED.get(data)
    const at = reserved.findIndex((byte) => byte !== 0)
    if (at !== -1)
      throw corrupt(
        path,
        label,
        'reserved byte at offset',
        V7_RESERVED.offset + at,
        'bytes 2060..2559 must be zero',
      )
  }
  const backing = decodePadded(path, label, 'backing file', V3_FIELDS.backingFile.get(data), true)
  const image = decodePadded(path, label, 'image file', V3_FIELDS.imageFile.get(data), true)
  if (image === '') throw corrupt(path, label, 'image file', '""', 'it must name the image file')
  return {
    layout,
    unit: SECTOR_SIZE,
    bitmapOffset,
    storedSize:
      layout === 'add-cow-v3' ? safeNumber(V3_FIELDS.size.get(data), path, `${label} size`) : null,
    backingName: backing === '' ? null : backing,
    backingFormat: null,
    imageName: image,
    imageFormat: 'raw',
    allAllocated: false,
  }
}
