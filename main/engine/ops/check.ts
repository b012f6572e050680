import { resolve } from 'node:path'
import type { OperationOptions } from '../disk'
import { isEngineError, throwIfAborted } from '../errors'
import { BlockFile } from '../file'
import { realPath } from '../fs'
import { MAX_BITMAP_BYTES } from '../formats/add-cow/add-cow-disk'
import { ClusterBitmap } from '../formats/common/bitmap'
import {
  ADD_COW_MAGIC,
  FEATURE_ALL_ALLOCATED,
  FIELDS,
  FIXED_HEADER_SIZE,
  geometry,
  headerSizeFor,
  MAX_CLUSTER_BITS,
  MIN_CLUSTER_BITS,
  type BitmapGeometry,
} from '../formats/add-cow/header'
import type { Library } from '../library'
import { nativeStatus } from '../native/index'
import { judgeName, STRICT_POLICY, type NamePolicy } from '../names'
import { openImage, probeFormat } from '../open'
import { decodeUtf8 } from '../struct'
import { fillBitmap, writeCompatibleFeatures } from './add-cow-edit'
import { checkBaseDrift, type DriftStatus } from './drift'
import { lockFiles } from './lock'
import { forEachDataExtent, punchOrZero } from '../formats/common/sparse'

/**
 * How bad a finding is, as qemu-img check counts them: `corruption` (data may be wrong or a
 * reader may refuse the file), `leak` (space wasted, no harm to data), `error` (the check could
 * not look at something), `warning` (worth knowing, harmless; does not change the exit code).
 */
export type CheckSeverity = 'corruption' | 'leak' | 'error' | 'warning'

/** The `-r` level that repairs a finding: `leaks` repairs leaks only, `all` everything it can. */
export type RepairLevel = 'leaks' | 'all'

/** One finding, with the offending value. Codes are stable (docs/operations.md lists them). */
export interface CheckProblem {
  code: string
  severity: CheckSeverity
  /** One sentence naming the file, the field and the value. */
  message: string
  field?: string
  /** Byte offset in the file the finding is about. */
  offset?: number
  value?: string | number
  expected?: string | number
  /** How many units (clusters, bytes, bits) the finding covers. */
  count?: number
  /** The -r level that repairs it; null when check does not repair it. */
  repair: RepairLevel | null
  repaired: boolean
}

/**
 * The report of `addcow check --json`. Keys follow qemu-img's ImageCheck where it has them
 * (`check-errors`, `corruptions`, `leaks`, `corruptions-fixed`, `leaks-fixed`,
 * `total-clusters`, `allocated-clusters`, `image-end-offset`); the rest is documented in
 * docs/operations.md.
 */
export interface CheckReport {
  filename: string
  format: string
  /** The format has no consistency check here (qemu-img check's exit 63). */
  unsupported?: boolean
  'check-errors': number
  corruptions: number
  /** Leaked clusters found by the scan, plus one per other leak finding. */
  leaks: number
  'corruptions-fixed': number
  'leaks-fixed': number
  'total-clusters'?: number
  'allocated-clusters'?: number
  /** Length of the add-cow file. */
  'image-end-offset'?: number
  'virtual-size'?: number
  'all-allocated'?: boolean
  'leaked-bytes': number
  /** The crash-consistency scan of the image file: done, impossible here, or not needed. */
  'leak-scan': 'done' | 'not-supported' | 'skipped'
  'leak-scan-note'?: string
  'base-fingerprint': DriftStatus | 'not-checked'
  problems: CheckProblem[]
  /** What -r changed, one sentence each. */
  repairs: string[]
}

/** What `checkImage` needs. */
export interface CheckOptions extends OperationOptions {
  /** Repair what is safe at this level (-r leaks | -r all). */
  repair?: RepairLevel
  /** The image's format (default: probed). */
  format?: string
  policy?: NamePolicy
  /** For the base drift check; without it drift is 'not-checked'. */
  library?: Library
  /** Record the base's current fingerprint when it changed or none was recorded. */
  acceptBase?: boolean
  /** Check without taking locks (qemu-img check -U); results on an image in use may be stale. */
  forceShare?: boolean
}

/** qemu-img check's exit code for a report: 0 clean, 1 could not check, 2 corrupt, 3 leaks, 63 unsupported. */
export function checkExitCode(report: CheckReport): number {
  if (report.unsupported) return 63
  if (report['check-errors'] > 0) return 1
  if (report.corruptions > 0) return 2
  if (report.leaks > 0) return 3
  return 0
}

/** Largest header read: header_size is at most 2 MiB. */
const MAX_HEADER = 2 ** MAX_CLUSTER_BITS
/** Offsets listed in a message before "…". */
const SHOWN = 8

function list(values: number[], total = values.length): string {
  return values.slice(0, SHOWN).join(', ') + (total > SHOWN ? `, … (${total} in all)` : '')
}

/** Everything the repairs need, gathered by the checks. */
interface Findings {
  meta: BlockFile
  metaLength: number
  headerSize: number
  clusterBits: number
  features: bigint
  imageFile: BlockFile | null
  shape: BitmapGeometry | null
  paddingOffsets: number[]
  strayBitmapBytes: number[]
  bitmap: ClusterBitmap | null
  hasBacking: boolean
}

class Checker {
  readonly problems: CheckProblem[] = []
  leakedClusters = 0
  leakedBytes = 0
  leakScan: CheckReport['leak-scan'] = 'skipped'
  leakScanNote: string | undefined
  drift: CheckReport['base-fingerprint'] = 'not-checked'
  virtualSize: number | undefined
  allAllocated: boolean | undefined

  constructor(readonly path: string) {}

  add(problem: Omit<CheckProblem, 'repaired' | 'repair'> & { repair?: RepairLevel | null }): void {
    this.problems.push({ repair: null, ...problem, repaired: false })
  }

  corrupt(
    code: string,
    field: string,
    value: string | number,
    rule: string,
    extra: Partial<CheckProblem> = {},
  ): void {
    this.add({
      code,
      severity: 'corruption',
      field,
      value,
      message: `${field} ${value} in ${this.path} is invalid: ${rule}.`,
      ...extra,
    })
  }
}

/** Validate the fixed header and names, collecting every problem; returns false when the rest cannot be checked. */
function checkHeader(
  checker: Checker,
  head: Buffer,
  length: number,
  findings: Partial<Findings>,
): { imageName: string; backingName: string | null } | null {
  const path = checker.path
  if (length < FIXED_HEADER_SIZE) {
    checker.corrupt(
      'file-too-short',
      'file length',
      length,
      `an add-cow file needs at least the ${FIXED_HEADER_SIZE}-byte fixed header`,
    )
    return null
  }
  const magic = FIELDS.magic.get(head)
  if (magic !== ADD_COW_MAGIC) {
    checker.corrupt(
      'magic',
      'magic',
      `0x${magic.toString(16).padStart(8, '0')}`,
      `it must be 0x${ADD_COW_MAGIC.toString(16)} ("ACOW")`,
      { offset: 0 },
    )
    return null
  }
  const incompatible = FIELDS.incompatibleFeatures.get(head)
  if (incompatible !== 0n) {
    checker.add({
      code: 'incompatible-features',
      severity: 'error',
      field: 'incompatible features',
      value: `0x${incompatible.toString(16)}`,
      offset: FIELDS.incompatibleFeatures.offset,
      message: `${path} uses incompatible features 0x${incompatible.toString(16)} that this tool does not know, so it cannot check it.`,
    })
    return null
  }
  const clusterBits = FIELDS.clusterBits.get(head)
  if (clusterBits < MIN_CLUSTER_BITS || clusterBits > MAX_CLUSTER_BITS) {
    checker.corrupt(
      'cluster-bits',
      'cluster_bits',
      clusterBits,
      `it must lie in ${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`,
      {
        offset: FIELDS.clusterBits.offset,
        expected: `${MIN_CLUSTER_BITS}..${MAX_CLUSTER_BITS}`,
      },
    )
    return null
  }
  const headerSize = FIELDS.headerSize.get(head)
  const expectedHeader = headerSizeFor(clusterBits)
  if (headerSize !== expectedHeader) {
    checker.corrupt(
      'header-size',
      'header_size',
      headerSize,
      `cluster_bits ${clusterBits} requires ${expectedHeader}`,
      {
        offset: FIELDS.headerSize.offset,
        expected: expectedHeader,
      },
    )
    return null
  }
  if (length < headerSize) {
    checker.corrupt(
      'file-too-short',
      'file length',
      length,
      `it is shorter than header_size ${headerSize}`,
      { expected: headerSize },
    )
    return null
  }
  findings.headerSize = headerSize
  findings.clusterBits = clusterBits
  findings.features = FIELDS.compatibleFeatures.get(head)
  const unknown = findings.features & ~FEATURE_ALL_ALLOCATED
  if (unknown !== 0n) {
    checker.add({
      code: 'unknown-compatible-features',
      severity: 'warning',
      field: 'compatible features',
      value: `0x${unknown.toString(16)}`,
      offset: FIELDS.compatibleFeatures.offset,
      message: `${path} sets compatible feature bits 0x${unknown.toString(16)} that this tool does not know; they are kept as they are.`,
    })
  }

  let fatal = false
  const nameAt = (
    label: 'backing' | 'image',
    offsetField: typeof FIELDS.imageNameOffset,
    lengthField: typeof FIELDS.imageNameLength,
    optional: boolean,
  ): [number, number] | null => {
    const offset = offsetField.get(head)
    const size = lengthField.get(head)
    if (optional && offset === 0 && size === 0) return null
    if (optional && (offset === 0) !== (size === 0)) {
      checker.corrupt(
        `${label}-name-bounds`,
        offset === 0 ? `${label} name length` : `${label} name offset`,
        offset === 0 ? size : offset,
        'offset and length must both be 0 when there is no backing file',
        { offset: offsetField.offset },
      )
      fatal = true
      return null
    }
    if (offset < FIXED_HEADER_SIZE || offset > headerSize - 2) {
      checker.corrupt(
        `${label}-name-bounds`,
        `${label} name offset`,
        offset,
        `it must lie in ${FIXED_HEADER_SIZE}..${headerSize - 2}`,
        { offset: offsetField.offset, expected: `${FIXED_HEADER_SIZE}..${headerSize - 2}` },
      )
      fatal = true
      return null
    }
    if (size === 0 || offset + size > headerSize) {
      checker.corrupt(
        `${label}-name-bounds`,
        `${label} name length`,
        size,
        size === 0
          ? 'it must not be 0'
          : `offset ${offset} + length runs past header_size ${headerSize}`,
        { offset: lengthField.offset },
      )
      fatal = true
      return null
    }
    return [offset, size]
  }
  const backing = nameAt('backing', FIELDS.backingNameOffset, FIELDS.backingNameLength, true)
  const image = nameAt('image', FIELDS.imageNameOffset, FIELDS.imageNameLength, false)
  if (backing && image && image[0] < backing[0] + backing[1] && backing[0] < image[0] + image[1]) {
    checker.corrupt(
      'name-overlap',
      'image name offset',
      image[0],
      `it overlaps the backing name at ${backing[0]}..${backing[0] + backing[1] - 1}`,
      { offset: FIELDS.imageNameOffset.offset },
    )
    fatal = true
  }
  const decode = (label: string, range: [number, number] | null): string | null => {
    if (!range) return null
    const text = decodeUtf8(head.subarray(range[0], range[0] + range[1]))
    if (text === null || text.includes('\0')) {
      checker.corrupt(
        `${label}-name-encoding`,
        `${label} name`,
        `(${range[1]} bytes at ${range[0]})`,
        text === null ? 'it is not valid UTF-8' : 'it contains a NUL byte',
        { offset: range[0] },
      )
      fatal = true
      return null
    }
    return text
  }
  const backingName = decode('backing', backing)
  const imageName = decode('image', image)

  // Format fields: printable ASCII, NUL-terminated within 16 bytes, zero after the NUL.
  const formats: Record<string, string | null> = {}
  for (const [label, field] of [
    ['backing format', FIELDS.backingFormat],
    ['image format', FIELDS.imageFormat],
  ] as const) {
    const raw = field.get(head)
    const nul = raw.indexOf(0)
    const code = label.replace(' ', '-')
    if (nul === -1) {
      checker.corrupt(
        code,
        label,
        JSON.stringify(Buffer.from(raw).toString('latin1')),
        'it has no NUL terminator within 16 bytes',
        { offset: field.offset },
      )
      formats[label] = null
      continue
    }
    const text = raw.subarray(0, nul)
    if (text.some((byte) => byte < 0x21 || byte > 0x7e)) {
      checker.corrupt(
        code,
        label,
        JSON.stringify(Buffer.from(text).toString('latin1')),
        'it is not printable ASCII',
        { offset: field.offset },
      )
      formats[label] = null
      continue
    }
    formats[label] = Buffer.from(text).toString('ascii')
    const dirty: number[] = []
    raw.subarray(nul).forEach((byte, index) => {
      if (byte !== 0) dirty.push(field.offset + nul + index)
    })
    if (dirty.length > 0) {
      findings.paddingOffsets?.push(...dirty)
      checker.add({
        code: 'header-padding',
        severity: 'corruption',
        field: label,
        offset: dirty[0]!,
        count: dirty.length,
        value: dirty.length,
        repair: 'all',
        message: `${label} in ${path} has ${dirty.length} non-zero byte(s) after its NUL terminator, at offsets ${list(dirty)}; they must be 0.`,
      })
    }
  }
  if (formats['image format'] === '')
    checker.corrupt('image-format', 'image format', '""', 'it must not be empty', {
      offset: FIELDS.imageFormat.offset,
    })
  if (formats['image format'] && formats['image format'] !== 'raw') {
    checker.add({
      code: 'image-format',
      severity: 'error',
      field: 'image format',
      value: formats['image format'],
      offset: FIELDS.imageFormat.offset,
      message: `Image format '${formats['image format']}' in ${path} is not supported; add-cow image files are raw.`,
    })
    fatal = true
  }
  if (!backing && formats['backing format']) {
    checker.corrupt(
      'backing-format',
      'backing format',
      JSON.stringify(formats['backing format']),
      'it must be empty when there is no backing file',
      { offset: FIELDS.backingFormat.offset },
    )
  }
  if (backing && formats['backing format'] === '') {
    checker.corrupt(
      'backing-format',
      'backing format',
      '""',
      "it must name the backing file's format",
      { offset: FIELDS.backingFormat.offset },
    )
  }

  // Every header byte that is not a name must be zero.
  const padding: number[] = []
  for (let offset = FIXED_HEADER_SIZE; offset < headerSize; offset++) {
    if (head[offset] === 0) continue
    const inBacking = backing !== null && offset >= backing[0] && offset < backing[0] + backing[1]
    const inImage = image !== null && offset >= image[0] && offset < image[0] + image[1]
    if (!inBacking && !inImage) padding.push(offset)
  }
  if (padding.length > 0 && !fatal) {
    findings.paddingOffsets?.push(...padding)
    checker.add({
      code: 'header-padding',
      severity: 'corruption',
      field: 'header padding',
      offset: padding[0]!,
      count: padding.length,
      value: padding.length,
      repair: 'all',
      message: `The header of ${path} holds ${padding.length} non-zero byte(s) outside the names, at offsets ${list(padding)}; every byte up to header_size that is not a name must be 0.`,
    })
  }
  findings.hasBacking = backing !== null
  if (fatal || imageName === null) return null
  return { imageName, backingName }
}

/** Check the bitmap area against the image file's length; fills findings.bitmap. */
async function checkBitmap(
  checker: Checker,
  findings: Findings,
  options: CheckOptions,
): Promise<void> {
  const shape = findings.shape!
  const { meta, metaLength, headerSize } = findings
  const path = checker.path
  if (shape.bitmapBytes > MAX_BITMAP_BYTES) {
    checker.add({
      code: 'size-limit',
      severity: 'error',
      field: 'virtual size',
      value: checker.virtualSize ?? 0,
      message: `${path} needs a ${shape.bitmapBytes}-byte bitmap for its ${checker.virtualSize}-byte image file; the limit is ${MAX_BITMAP_BYTES}.`,
    })
    return
  }
  if (metaLength < shape.fileLength) {
    checker.add({
      code: 'metadata-file-too-short',
      severity: 'corruption',
      field: 'file length',
      value: metaLength,
      expected: shape.fileLength,
      repair: 'all',
      message: `${path} is ${metaLength} bytes long, too short for the bitmap of its ${checker.virtualSize}-byte image file (it must be ${shape.fileLength}); the missing bits read as 0.`,
    })
  } else if (metaLength > shape.fileLength) {
    checker.add({
      code: 'metadata-file-too-long',
      severity: 'leak',
      field: 'file length',
      value: metaLength,
      expected: shape.fileLength,
      count: metaLength - shape.fileLength,
      repair: 'leaks',
      message: `${path} is ${metaLength} bytes long, ${metaLength - shape.fileLength} bytes longer than the bitmap of its ${checker.virtualSize}-byte image file needs (${shape.fileLength}).`,
    })
  }
  const area = Buffer.alloc(shape.bitmapArea)
  const present = Math.max(0, Math.min(shape.bitmapArea, metaLength - headerSize))
  if (present > 0) await meta.readAt(area.subarray(0, present), headerSize)
  throwIfAborted(options.signal, 'check')

  // Bits past the last cluster: the tail of the last bitmap byte, then whole bytes up to the
  // end of the file (set there when the image file was cut shorter than the bitmap says).
  const tail = shape.clusters % 8
  if (tail !== 0 && shape.bitmapBytes > 0) {
    const last = area[shape.bitmapBytes - 1]!
    const stray = last & ~((1 << tail) - 1) & 0xff
    if (stray !== 0) {
      findings.strayBitmapBytes.push(shape.bitmapBytes - 1)
      const bits: number[] = []
      for (let bit = tail; bit < 8; bit++)
        if (stray & (1 << bit)) bits.push((shape.bitmapBytes - 1) * 8 + bit)
      checker.add({
        code: 'stray-bits',
        severity: 'corruption',
        field: 'bitmap',
        offset: headerSize + shape.bitmapBytes - 1,
        value: `0x${last.toString(16).padStart(2, '0')}`,
        count: bits.length,
        repair: 'all',
        message: `Bitmap byte ${headerSize + shape.bitmapBytes - 1} of ${path} is 0x${last.toString(16).padStart(2, '0')}: bits for clusters ${list(bits)} past the last cluster ${shape.clusters - 1} are set, and must be 0.`,
      })
    }
  }
  const beyond: number[] = []
  let firstBeyondCluster = -1
  const scanBeyond = (bytes: Uint8Array, startIndex: number): void => {
    bytes.forEach((byte, index) => {
      if (byte === 0) return
      beyond.push(startIndex + index)
      if (firstBeyondCluster < 0)
        firstBeyondCluster = (startIndex + index) * 8 + Math.log2(byte & -byte)
    })
  }
  scanBeyond(area.subarray(shape.bitmapBytes), shape.bitmapBytes)
  const extraEnd = Math.min(metaLength, headerSize + MAX_BITMAP_BYTES)
  const chunk = Buffer.allocUnsafe(1024 * 1024)
  for (
    let position = headerSize + shape.bitmapArea;
    position < extraEnd;
    position += chunk.length
  ) {
    const piece = chunk.subarray(0, Math.min(chunk.length, extraEnd - position))
    await meta.readAt(piece, position)
    scanBeyond(piece, position - headerSize)
  }
  if (beyond.length > 0) {
    findings.strayBitmapBytes.push(...beyond.filter((index) => index < shape.bitmapArea))
    const needs = (firstBeyondCluster + 1) * shape.clusterSize
    checker.add({
      code: 'image-file-too-short',
      severity: 'corruption',
      field: 'bitmap',
      offset: headerSize + beyond[0]!,
      value: checker.virtualSize ?? 0,
      expected: needs,
      count: beyond.length,
      repair: 'all',
      message: `Bits for clusters from ${firstBeyondCluster} on are set in ${path}, but its image file is only ${checker.virtualSize} bytes (${shape.clusters} clusters): the image file is shorter than the bitmap implies (at least ${needs} bytes), and data written past its end is lost.`,
    })
  }
  findings.bitmap = new ClusterBitmap(
    Buffer.from(area.subarray(0, shape.bitmapBytes)),
    shape.clusters,
  )
}

/** The crash-consistency scan: image-file data inside clusters whose bit is 0 (lost bitmap updates). */
async function scanLeaks(
  checker: Checker,
  findings: Findings,
  punch: boolean,
  options: CheckOptions,
): Promise<string[]> {
  const repairs: string[] = []
  const image = findings.imageFile!
  const bitmap = findings.bitmap!
  const clusterSize = findings.shape!.clusterSize
  const size = checker.virtualSize ?? 0
  const examples: number[] = []
  let lastLeaked = -1
  let punched = 0
  let how: 'punched' | 'zeroed' = 'punched'
  const status = nativeStatus()
  const listed = await forEachDataExtent(image, 0, size, async (start, end) => {
    throwIfAborted(options.signal, 'check')
    options.onProgress?.(end, size)
    const runs: [number, number][] = []
    bitmap.forEachRun(
      Math.floor(start / clusterSize),
      Math.ceil(end / clusterSize),
      (first, stop, allocated) => {
        if (!allocated) runs.push([first, stop])
      },
    )
    for (const [first, stop] of runs) {
      const from = Math.max(start, first * clusterSize)
      const to = Math.min(end, stop * clusterSize)
      if (to <= from) continue
      checker.leakedBytes += to - from
      const firstCluster = Math.floor(from / clusterSize)
      const lastCluster = Math.ceil(to / clusterSize) - 1
      const counted = Math.max(firstCluster, lastLeaked + 1)
      if (lastCluster >= counted) {
        checker.leakedClusters += lastCluster - counted + 1
        for (let cluster = counted; cluster <= lastCluster && examples.length < SHOWN; cluster++)
          examples.push(cluster)
        lastLeaked = lastCluster
      }
      if (punch) {
        if ((await punchOrZero(image, from, to - from)) === 'zeroed') how = 'zeroed'
        punched += to - from
      }
    }
  })
  if (!listed) {
    checker.leakScan = 'not-supported'
    checker.leakScanNote = status.loaded
      ? 'the filesystem cannot list data extents (SEEK_DATA)'
      : `the native addon is not loaded (${status.reason ?? 'unknown reason'})`
    return repairs
  }
  checker.leakScan = 'done'
  if (checker.leakedClusters > 0) {
    checker.add({
      code: 'leaked-clusters',
      severity: 'leak',
      field: 'image file',
      value: checker.leakedBytes,
      count: checker.leakedClusters,
      repair: 'leaks',
      message: `${image.path} holds ${checker.leakedBytes} bytes of data in ${checker.leakedClusters} cluster(s) whose bit is 0 (writes whose bitmap update was lost), e.g. clusters ${list(examples, checker.leakedClusters)}.`,
    })
  }
  if (punch && punched > 0) {
    await image.datasync()
    repairs.push(
      `${how === 'punched' ? 'Punched holes over' : 'Wrote zeros over'} ${punched} leaked bytes in ${checker.leakedClusters} cluster(s) of ${image.path}.`,
    )
  }
  return repairs
}

/** Check the chain below the overlay: reachable, no loops, formats, and the base's drift. */
async function checkChain(checker: Checker, options: CheckOptions): Promise<void> {
  let disk
  try {
    disk = await openImage(checker.path, {
      format: 'add-cow',
      readOnly: true,
      ...(options.policy ? { policy: options.policy } : {}),
    })
  } catch (error) {
    if (!isEngineError(error)) throw error
    const top = error.path === checker.path
    const severity: CheckSeverity = [
      'MISSING_FILE',
      'UNTRUSTED_NAME',
      'REFUSED_NAME',
      'PERMISSION_DENIED',
      'IO_ERROR',
      'BUSY',
    ].includes(error.code)
      ? 'error'
      : 'corruption'
    if (top && (error.code === 'CORRUPT_IMAGE' || error.code === 'CORRUPT_HEADER')) return
    const code =
      error.code === 'CHAIN_LOOP'
        ? 'chain-loop'
        : error.code === 'CHAIN_TOO_DEEP'
          ? 'chain-too-deep'
          : error.code === 'SAME_FILE'
            ? 'same-file'
            : error.code === 'FORMAT_MISMATCH'
              ? 'backing-format-mismatch'
              : severity === 'error'
                ? 'backing-unreachable'
                : 'backing-corrupt'
    checker.add({
      code,
      severity,
      field: error.field ?? 'backing file',
      value: String(error.value ?? error.path ?? ''),
      message: error.message,
    })
    return
  }
  try {
    if (!options.library) return
    const report = await checkBaseDrift(disk, options.library, options)
    checker.drift = report.status
    if (report.status === 'changed') {
      const accepted = options.acceptBase === true
      checker.problems.push({
        code: 'base-changed',
        severity: 'corruption',
        field: 'base fingerprint',
        value: report.changes[0] ?? '',
        repair: null,
        repaired: accepted,
        message: `The base ${report.base} of ${checker.path} changed since its fingerprint was recorded (${report.changes.join('; ')}); the overlay's guest view may be corrupt.`,
      })
    }
    if (
      options.acceptBase &&
      report.current &&
      (report.status === 'changed' || report.status === 'not-recorded')
    ) {
      await options.library.recordBaseFingerprint(report.current)
    }
  } finally {
    await disk.close()
  }
}

function merge(offsets: number[]): [number, number][] {
  const sorted = [...new Set(offsets)].sort((a, b) => a - b)
  const runs: [number, number][] = []
  for (const offset of sorted) {
    const last = runs[runs.length - 1]
    if (last && last[1] === offset) last[1]++
    else runs.push([offset, offset + 1])
  }
  return runs
}

/** Apply the repairs at `level` (never touching the base); returns what changed. */
async function repair(checker: Checker, findings: Findings, level: RepairLevel): Promise<string[]> {
  const done: string[] = []
  const { meta } = findings
  const wanted = (problem: CheckProblem): boolean =>
    problem.repair !== null && !problem.repaired && (level === 'all' || problem.repair === 'leaks')
  const problems = (code: string): CheckProblem[] =>
    checker.problems.filter((problem) => problem.code === code && wanted(problem))
  const mark = (list: CheckProblem[]): void => list.forEach((problem) => (problem.repaired = true))

  const padding = problems('header-padding')
  if (padding.length > 0) {
    for (const [from, to] of merge(findings.paddingOffsets))
      await meta.writeAt(Buffer.alloc(to - from), from)
    await meta.datasync()
    mark(padding)
    done.push(
      `Zeroed ${findings.paddingOffsets.length} non-zero header padding byte(s) of ${checker.path}.`,
    )
  }
  const shape = findings.shape
  const short = problems('metadata-file-too-short')
  if (short.length > 0 && shape) {
    await meta.truncate(shape.fileLength)
    await meta.sync()
    mark(short)
    done.push(
      `Extended ${checker.path} from ${findings.metaLength} to ${shape.fileLength} bytes (the missing bits read as 0).`,
    )
  }
  const stray = [...problems('stray-bits'), ...problems('image-file-too-short')]
  if (stray.length > 0 && shape) {
    for (const index of [...new Set(findings.strayBitmapBytes)]) {
      const tail = shape.clusters % 8
      const keep =
        index === shape.bitmapBytes - 1 && tail !== 0
          ? (findings.bitmap?.bytes[index] ?? 0) & ((1 << tail) - 1)
          : 0
      await meta.writeAt(
        Buffer.from([index < shape.bitmapBytes ? keep : 0]),
        findings.headerSize + index,
      )
    }
    await meta.datasync()
    mark(stray)
    done.push(
      `Cleared the bits past the last cluster ${shape.clusters - 1} in ${findings.strayBitmapBytes.length} bitmap byte(s) of ${checker.path}.`,
    )
  }
  const inconsistent = problems('all-allocated-inconsistent')
  if (inconsistent.length > 0 && shape && checker.virtualSize !== undefined) {
    await fillBitmap(
      meta,
      { clusterBits: findings.clusterBits, headerSize: findings.headerSize },
      checker.virtualSize,
    )
    mark(inconsistent)
    done.push(
      `Set every bit of the bitmap of ${checker.path} to match ALL_ALLOCATED (the guest view is unchanged).`,
    )
  }
  const missing = problems('all-allocated-missing')
  if (missing.length > 0) {
    await writeCompatibleFeatures(meta, findings.features | FEATURE_ALL_ALLOCATED)
    mark(missing)
    done.push(`Set ALL_ALLOCATED in ${checker.path}: every cluster is allocated.`)
  }
  const long = problems('metadata-file-too-long')
  if (long.length > 0 && shape) {
    await meta.truncate(shape.fileLength)
    await meta.sync()
    mark(long)
    done.push(`Cut ${checker.path} from ${findings.metaLength} to ${shape.fileLength} bytes.`)
  }
  return done
}

/**
 * `check`: look at every part of an add-cow image that can be wrong, and report each problem
 * with the offending value: header fields and names out of range, non-zero header padding, the
 * add-cow file's length against the bitmap, bits past the last cluster, an image file shorter
 * than the bitmap implies, ALL_ALLOCATED against the bitmap, data in unallocated clusters
 * (a lost bitmap update after a crash: a leak), and the chain (reachable, no loop, base drift).
 *
 * With `repair` it fixes what is safe at that level (it never writes the base), then checks
 * again; the report counts what remains and what was fixed, as qemu-img check -r does.
 */
export async function checkImage(path: string, options: CheckOptions = {}): Promise<CheckReport> {
  const absolute = resolve(path)
  const format = options.format ?? (await probeFormat(absolute))
  const base: CheckReport = {
    filename: absolute,
    format,
    'check-errors': 0,
    corruptions: 0,
    leaks: 0,
    'corruptions-fixed': 0,
    'leaks-fixed': 0,
    'leaked-bytes': 0,
    'leak-scan': 'skipped',
    'base-fingerprint': 'not-checked',
    problems: [],
    repairs: [],
  }
  if (format !== 'add-cow') return { ...base, unsupported: true }
  const writable = options.repair !== undefined
  const meta = await BlockFile.open(absolute, writable)
  const checker = new Checker(absolute)
  const findings: Findings = {
    meta,
    metaLength: 0,
    headerSize: 0,
    clusterBits: 0,
    features: 0n,
    imageFile: null,
    shape: null,
    paddingOffsets: [],
    strayBitmapBytes: [],
    bitmap: null,
    hasBacking: false,
  }
  let release: (() => Promise<void>) | null = null
  const repairs: string[] = []
  try {
    if (!options.forceShare) {
      release = (
        await lockFiles(
          [{ path: await realPath(absolute), mode: writable ? 'exclusive' : 'shared' }],
          writable ? 'repair it' : 'check it',
        )
      ).release
    }
    findings.metaLength = await meta.length()
    const head = Buffer.alloc(Math.min(findings.metaLength, MAX_HEADER))
    await meta.readAt(head, 0)
    const names = checkHeader(checker, head, findings.metaLength, findings)
    if (names) {
      const verdict = await judgeName(
        absolute,
        names.imageName,
        'raw',
        options.policy ?? STRICT_POLICY,
      )
      if (!verdict.followed) {
        checker.add({
          code: 'image-file-unreachable',
          severity: 'error',
          field: 'image name',
          value: names.imageName,
          message: `The image file '${names.imageName}' (${verdict.resolved}) of ${absolute} cannot be checked: ${verdict.reason === 'missing' ? 'it does not exist' : `the name is refused (${verdict.reason}); pass --allow-name if you trust it`}.`,
        })
      } else if (verdict.realPath === (await realPath(absolute))) {
        checker.corrupt(
          'same-file',
          'image name',
          names.imageName,
          'the image file is the add-cow file itself',
        )
      } else {
        findings.imageFile = await BlockFile.open(verdict.resolved, writable)
        if (release && !options.forceShare) {
          const more = await lockFiles(
            [{ path: verdict.realPath, mode: writable ? 'exclusive' : 'shared' }],
            writable ? 'repair it' : 'check it',
          )
          const first = release
          release = async () => {
            await more.release()
            await first()
          }
        }
        checker.virtualSize = await findings.imageFile.length()
        findings.shape = geometry(findings.clusterBits, checker.virtualSize)
        await checkBitmap(checker, findings, options)
        const allAllocated = (findings.features & FEATURE_ALL_ALLOCATED) !== 0n
        checker.allAllocated = allAllocated
        const bitmap = findings.bitmap as ClusterBitmap | null
        if (bitmap) {
          if (allAllocated && findings.hasBacking && !bitmap.isFull) {
            checker.add({
              code: 'all-allocated-inconsistent',
              severity: 'corruption',
              field: 'compatible features',
              value: `0x${findings.features.toString(16)}`,
              count: bitmap.clusters - bitmap.allocatedCount,
              repair: 'all',
              message: `${absolute} sets ALL_ALLOCATED but ${bitmap.clusters - bitmap.allocatedCount} of its ${bitmap.clusters} bits are 0, so readers that honour the flag and readers that follow the bitmap see different data there.`,
            })
          } else if (!allAllocated && bitmap.isFull && bitmap.clusters > 0) {
            checker.add({
              code: 'all-allocated-missing',
              severity: 'warning',
              field: 'compatible features',
              value: `0x${findings.features.toString(16)}`,
              repair: 'all',
              message: `Every cluster of ${absolute} is allocated but ALL_ALLOCATED is not set (the base is still opened for nothing).`,
            })
          }
          if (!allAllocated) {
            repairs.push(
              ...(await scanLeaks(checker, findings, options.repair !== undefined, options)),
            )
            if (options.repair !== undefined) {
              for (const problem of checker.problems)
                if (problem.code === 'leaked-clusters') problem.repaired = true
            }
          }
        }
      }
      if (
        names.backingName !== null &&
        !checker.allAllocated &&
        !checker.problems.some((problem) => problem.severity === 'error')
      ) {
        await checkChain(checker, options)
      }
    }
    if (options.repair) repairs.push(...(await repair(checker, findings, options.repair)))
  } finally {
    await findings.imageFile?.close().catch(() => undefined)
    await meta.close().catch(() => undefined)
    await release?.()
  }

  const fixed = (severity: CheckSeverity): number =>
    checker.problems
      .filter((problem) => problem.severity === severity && problem.repaired)
      .reduce((sum, problem) => sum + weight(problem), 0)
  const open = (severity: CheckSeverity): number =>
    checker.problems
      .filter((problem) => problem.severity === severity && !problem.repaired)
      .reduce((sum, problem) => sum + weight(problem), 0)
  let report: CheckReport = {
    ...base,
    'check-errors': open('error'),
    corruptions: open('corruption'),
    leaks: open('leak'),
    'corruptions-fixed': fixed('corruption'),
    'leaks-fixed': fixed('leak'),
    'leaked-bytes': checker.leakedBytes,
    'leak-scan': checker.leakScan,
    'base-fingerprint': checker.drift,
    problems: checker.problems,
    repairs,
  }
  if (findings.shape) {
    report['total-clusters'] = findings.shape.clusters
    report['allocated-clusters'] = checker.allAllocated
      ? findings.shape.clusters
      : ((findings.bitmap as ClusterBitmap | null)?.allocatedCount ?? 0)
    report['virtual-size'] = checker.virtualSize ?? 0
  }
  if (checker.allAllocated !== undefined) report['all-allocated'] = checker.allAllocated
  report['image-end-offset'] = findings.metaLength
  if (checker.leakScanNote) report['leak-scan-note'] = checker.leakScanNote
  if (options.repair && repairs.length > 0) {
    // Check again, as qemu-img check -r does: the counts describe the image after the repair.
    const { repair: _repair, acceptBase: _accept, ...rest } = options
    const again = await checkImage(absolute, rest)
    report = {
      ...again,
      'corruptions-fixed': report['corruptions-fixed'],
      'leaks-fixed': report['leaks-fixed'],
      problems: [...checker.problems.filter((problem) => problem.repaired), ...again.problems],
      repairs,
    }
  }
  return report
}

function weight(problem: CheckProblem): number {
  return problem.code === 'leaked-clusters' ? (problem.count ?? 1) : 1
}
