import { open, unlink, type FileHandle } from 'node:fs/promises'
import type {
  CheckContext,
  CheckProblem,
  CheckReport,
  FormatCheck,
  RepairLevel,
} from '../../check-report'
import { bounded, quote, throwIfAborted, wrapIoError } from '../../errors'
import { BlockFile } from '../../file'
import { realPath } from '../../fs'
import { nativeStatus } from '../../native/index'
import { judgeName } from '../../names'
import { ClusterBitmap } from '../common/bitmap'
import { forEachDataExtent, punchOrZero } from '../common/sparse'
import { fillBitmap, writeCompatibleFeatures } from './edit'
import {
  FEATURE_ALL_ALLOCATED,
  geometry,
  imageFormatIssue,
  inspectHeader,
  listOffsets as list,
  MAX_BITMAP_BYTES,
  MAX_CLUSTER_BITS,
  type BitmapGeometry,
  type HeaderIssue,
} from './header'

/**
 * The add-cow half of `check` (the add-cow driver's `check`): the header (through
 * {@link inspectHeader}, the one validation the reader uses too), the add-cow file's length
 * against the bitmap, bits past the last cluster, an image file shorter than the bitmap
 * implies, ALL_ALLOCATED against the bitmap, and data in unallocated clusters (a lost bitmap
 * update after a crash: a leak). With `repair` it fixes what is safe at that level. The chain
 * and the base's drift are the check operation's (main/engine/ops/check.ts).
 */

/** Largest header read: header_size is at most 2 MiB. */
const MAX_HEADER = 2 ** MAX_CLUSTER_BITS
/** Offsets listed in a message before "…". */
const SHOWN = 8

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
      message: `${field} ${typeof value === 'string' ? quote(value) : value} in ${this.path} is invalid: ${rule}.`,
      ...extra,
    })
  }
}

/** A header issue as a check finding (padding is repaired by -r all). */
function problemOf(issue: HeaderIssue): Omit<CheckProblem, 'repaired' | 'repair'> & {
  repair?: RepairLevel | null
} {
  const { error: _error, zeroBytes, ...rest } = issue
  void _error
  return { ...rest, ...(zeroBytes ? { repair: 'all' as const } : {}) }
}

/** Check the bitmap area against the image file's length; fills findings.bitmap. */
async function checkBitmap(
  checker: Checker,
  findings: Findings,
  options: CheckContext,
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
      message: `Bits for clusters from ${firstBeyondCluster} on are set in ${path}, past the end of the disk: its image file is ${checker.virtualSize} bytes (${shape.clusters} clusters), shorter than the bitmap implies (at least ${needs} bytes). The image file was cut (a shrink that stopped part way, or another tool); the guest never reads past the disk's end, so what it sees is unchanged, and the repair only clears those bits.`,
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
  options: CheckContext,
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

/** Findings whose repair rewrites the add-cow file's header or bitmap (or its length). */
const METADATA_REPAIRS = new Set([
  'header-padding',
  'metadata-file-too-short',
  'metadata-file-too-long',
  'stray-bits',
  'image-file-too-short',
  'all-allocated-inconsistent',
  'all-allocated-missing',
])

/** `20261205-213012`: a local time stamp for a file name. */
function fileStamp(date: Date): string {
  const two = (value: number): string => String(value).padStart(2, '0')
  return `${date.getFullYear()}${two(date.getMonth() + 1)}${two(date.getDate())}-${two(date.getHours())}${two(date.getMinutes())}${two(date.getSeconds())}`
}

/**
 * Before a repair rewrites the header or the bitmap, copy the add-cow file's bytes it may
 * rewrite (the header and the bitmap area, up to the length check reads) to a new file beside
 * it, `NAME.before-repair-STAMP`, so the user can put them back. The copy is written and
 * flushed before the first repair write; a copy that cannot be made stops the repair.
 * Returns the copy's path.
 */
async function keepMetadataCopy(findings: Findings, path: string): Promise<string> {
  const length = Math.min(findings.metaLength, findings.headerSize + MAX_BITMAP_BYTES)
  const stamp = fileStamp(new Date())
  let target = `${path}.before-repair-${stamp}`
  let handle: FileHandle | null = null
  for (let attempt = 2; handle === null; attempt++) {
    try {
      handle = await open(target, 'wx', 0o600)
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 100)
        throw wrapIoError(error, target, 'create the copy of the header and bitmap at')
      target = `${path}.before-repair-${stamp}-${attempt}`
    }
  }
  try {
    const chunk = Buffer.allocUnsafe(Math.min(1024 * 1024, Math.max(1, length)))
    for (let position = 0; position < length; position += chunk.length) {
      const piece = chunk.subarray(0, Math.min(chunk.length, length - position))
      await findings.meta.readAt(piece, position)
      await handle.write(piece, 0, piece.length, position)
    }
    await handle.sync()
  } catch (error) {
    await handle.close().catch(() => undefined)
    await unlink(target).catch(() => undefined)
    throw wrapIoError(error, target, 'write the copy of the header and bitmap to')
  }
  await handle.close()
  return target
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

  if (checker.problems.some((problem) => wanted(problem) && METADATA_REPAIRS.has(problem.code))) {
    const copy = await keepMetadataCopy(findings, checker.path)
    done.push(
      `Kept a copy of the header and bitmap of ${checker.path} as they were before the repair: ${copy}.`,
    )
  }

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
 * Check (and with `context.repair`, repair) the add-cow file at `path` and its image file.
 * Every file is locked through `context.lock` before it is read.
 */
export async function checkAddCow(path: string, context: CheckContext): Promise<FormatCheck> {
  const writable = context.repair !== undefined
  const meta = await BlockFile.open(path, writable)
  const checker = new Checker(path)
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
  const repairs: string[] = []
  let readsBacking = false
  try {
    await context.lock([path])
    findings.metaLength = await meta.length()
    const head = Buffer.alloc(Math.min(findings.metaLength, MAX_HEADER))
    await meta.readAt(head, 0)
    const inspection = inspectHeader(head, path, undefined, findings.metaLength)
    const unsupported =
      inspection.imageFormat === null ? null : imageFormatIssue(path, inspection.imageFormat)
    for (const issue of inspection.issues) {
      // A file this tool cannot use has its names checked, not the padding between them.
      if (unsupported && issue.field === 'header padding') continue
      checker.add(problemOf(issue))
      if (issue.zeroBytes) findings.paddingOffsets.push(...issue.zeroBytes)
    }
    if (unsupported) checker.add(problemOf(unsupported))
    if (inspection.fixed) {
      findings.headerSize = inspection.fixed.headerSize
      findings.clusterBits = inspection.fixed.clusterBits
      findings.features = inspection.fixed.compatibleFeatures
      findings.hasBacking = inspection.hasBacking
    }
    const names = unsupported ? null : inspection.names
    if (names) {
      const verdict = await judgeName(path, names.image, 'raw', context.policy)
      if (!verdict.followed) {
        checker.add({
          code: 'image-file-unreachable',
          severity: 'error',
          field: 'image name',
          value: names.image,
          message: `The image file ${quote(names.image)} (${bounded(verdict.resolved)}) of ${path} cannot be checked: ${verdict.reason === 'missing' ? 'it does not exist' : `the name is refused (${verdict.reason}); pass --allow-name if you trust it`}.`,
        })
      } else if (verdict.realPath === (await realPath(path))) {
        checker.corrupt(
          'same-file',
          'image name',
          names.image,
          'the image file is the add-cow file itself',
        )
      } else {
        findings.imageFile = await BlockFile.open(verdict.resolved, writable)
        await context.lock([verdict.realPath])
        checker.virtualSize = await findings.imageFile.length()
        findings.shape = geometry(findings.clusterBits, checker.virtualSize)
        await checkBitmap(checker, findings, context)
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
              message: `${path} sets ALL_ALLOCATED but ${bitmap.clusters - bitmap.allocatedCount} of its ${bitmap.clusters} bits are 0, so readers that honour the flag and readers that follow the bitmap see different data there.`,
            })
          } else if (!allAllocated && bitmap.isFull && bitmap.clusters > 0) {
            checker.add({
              code: 'all-allocated-missing',
              severity: 'warning',
              field: 'compatible features',
              value: `0x${findings.features.toString(16)}`,
              repair: 'all',
              message: `Every cluster of ${path} is allocated but ALL_ALLOCATED is not set (the base is still opened for nothing).`,
            })
          }
          if (!allAllocated) {
            repairs.push(...(await scanLeaks(checker, findings, writable, context)))
            if (writable) {
              for (const problem of checker.problems)
                if (problem.code === 'leaked-clusters') problem.repaired = true
            }
          }
        }
      }
      readsBacking =
        names.backing !== null &&
        !checker.allAllocated &&
        !checker.problems.some((problem) => problem.severity === 'error')
    }
    if (context.repair) repairs.push(...(await repair(checker, findings, context.repair)))
  } finally {
    await findings.imageFile?.close().catch(() => undefined)
    await meta.close().catch(() => undefined)
  }
  const counts: FormatCheck['counts'] = {
    'leaked-bytes': checker.leakedBytes,
    'leak-scan': checker.leakScan,
    'image-end-offset': findings.metaLength,
  }
  if (findings.shape) {
    counts['total-clusters'] = findings.shape.clusters
    counts['allocated-clusters'] = checker.allAllocated
      ? findings.shape.clusters
      : ((findings.bitmap as ClusterBitmap | null)?.allocatedCount ?? 0)
    counts['virtual-size'] = checker.virtualSize ?? 0
  }
  if (checker.allAllocated !== undefined) counts['all-allocated'] = checker.allAllocated
  if (checker.leakScanNote) counts['leak-scan-note'] = checker.leakScanNote
  return { problems: checker.problems, repairs, counts, readsBacking }
}
