import { open, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach } from 'vitest'
import type { Disk } from '../../main/engine/disk'
import {
  encodeHeader,
  FEATURE_ALL_ALLOCATED,
  geometry,
  headerSizeFor,
} from '../../main/engine/formats/add-cow/header'
import { BlockFile } from '../../main/engine/file'
import { dataExtentsIn } from '../../main/engine/formats/common/sparse'
import { Library } from '../../main/engine/library'
import { openImage } from '../../main/engine/open'
import { createOverlay, type CreateOverlayOptions } from '../../main/engine/ops/create'
import { tempDir } from './tools'

/**
 * Image-building helpers for every engine test (and the interop tests that build images): byte
 * patterns, raw files dense or sparse, add-cow files written directly, overlays made as the CLI
 * makes them, and what an image shows. The byte-by-byte builders of the older formats are in
 * format-builders.ts; error expectations in errors.ts; the power-cut model in power-cut.ts.
 */

/** Cluster sizes every behaviour suite runs over: the smallest, the default and the largest. */
export const CLUSTER_SIZES = [4096, 65536, 2 * 1024 * 1024] as const

/** The pattern repeats every 255 * 512 bytes (both of its terms do). */
const PATTERN_PERIOD = 255 * 512
const periods = new Map<number, Buffer>()

/**
 * ((7 * j) % 255) + 1 for j = 0 .. 254 + 511: every 512-byte block of a period is a piece of
 * it, since within a block the pattern steps by 7 (mod 255).
 */
const RAMP = Buffer.from(Array.from({ length: 255 + 512 }, (_, j) => ((7 * j) % 255) + 1))

/** One period of {@link pattern} for `seed`, cached. */
function patternPeriod(seed: number): Buffer {
  let period = periods.get(seed)
  if (!period) {
    period = Buffer.allocUnsafe(PATTERN_PERIOD)
    if (Number.isSafeInteger(seed * 73 + 7 * PATTERN_PERIOD) && seed >= 0) {
      // Block b holds ((c + 7i) % 255) + 1 for i < 512, c = (seed * 73 + (7 * 512 + 13) * b)
      // % 255: that is RAMP from k, where 7k = c (mod 255), k = 73c % 255 (7 * 73 = 511).
      for (let block = 0; block < 255; block++) {
        const k = (((seed * 73 + 3597 * block) % 255) * 73) % 255
        RAMP.copy(period, block * 512, k, k + 512)
      }
    } else {
      for (let at = 0; at < PATTERN_PERIOD; at++)
        period[at] = ((seed * 73 + at * 7 + (at >>> 9) * 13) % 255) + 1
    }
    periods.set(seed, period)
  }
  return period
}

/**
 * A deterministic, never-all-zero byte pattern: `seed` tells patterns apart, and the byte at a
 * given offset differs from its neighbours so misplaced data shows. `start` is the offset of
 * the first byte (a piece of a longer pattern).
 */
export function pattern(length: number, seed: number, start = 0): Buffer {
  const period = patternPeriod(seed)
  const phase = start % PATTERN_PERIOD
  const buffer = Buffer.allocUnsafe(length)
  if (length <= PATTERN_PERIOD - phase) {
    period.copy(buffer, 0, phase, phase + length)
  } else {
    buffer.fill(Buffer.concat([period.subarray(phase), period.subarray(0, phase)]))
  }
  return buffer
}

/** Write a raw file of `size` bytes holding {@link pattern}(size, seed). */
export async function makeRaw(path: string, size: number, seed: number): Promise<Buffer> {
  const data = pattern(size, seed)
  await writeFile(path, data)
  return data
}

/** A raw file of `size` bytes holding `chunks` ([offset, data]) and holes elsewhere. */
export async function makeSparseRaw(
  path: string,
  size: number,
  chunks: [number, Buffer][] = [],
): Promise<void> {
  const handle = await open(path, 'w')
  try {
    await handle.truncate(size)
    for (const [offset, data] of chunks) await handle.write(data, 0, data.length, offset)
  } finally {
    await handle.close()
  }
}

/**
 * Give the file at `path` exactly the content `data`, writing only its non-zero 64 KiB blocks
 * into a file cut to zero first (the rest are holes): restoring a mostly empty 40 MiB image
 * writes a few MiB instead of all of it.
 */
export async function restoreSparse(path: string, data: Buffer): Promise<void> {
  const block = 64 * 1024
  const handle = await open(path, 'w')
  try {
    await handle.truncate(data.length)
    let start = -1
    for (let offset = 0; offset <= data.length; offset += block) {
      const piece = data.subarray(offset, Math.min(data.length, offset + block))
      const zero = piece.length === 0 || piece.equals(zeroBlock.subarray(0, piece.length))
      if (!zero && start < 0) start = offset
      if ((zero || offset + block >= data.length) && start >= 0) {
        const end = zero ? offset : data.length
        await handle.write(data, start, end - start, start)
        start = -1
      }
    }
  } finally {
    await handle.close()
  }
}

const zeroBlock = Buffer.alloc(64 * 1024)

/**
 * The whole content of a file, reading only its data extents (holes are zeros in a freshly
 * zeroed buffer): a 40 MiB image with a few MiB of data costs a few MiB of reads.
 */
export async function readSparseFile(path: string): Promise<Buffer> {
  const file = await BlockFile.open(path, false)
  try {
    const content = Buffer.alloc(await file.length())
    const extents = (await dataExtentsIn(file, 0, content.length)) ?? [[0, content.length]]
    for (const [start, end] of extents) await file.readAt(content.subarray(start, end), start)
    return content
  } finally {
    await file.close()
  }
}

/** Bytes read at a time by {@link fileEquals}, into buffers kept for later calls. */
const COMPARE_PIECE = 1024 * 1024
const comparePieces: Buffer[] = []
const zeroPiece = Buffer.alloc(COMPARE_PIECE)

/** Whether `bytes` holds only zeros. */
function allZero(bytes: Uint8Array): boolean {
  for (let at = 0; at < bytes.length; at += COMPARE_PIECE) {
    const piece = bytes.subarray(at, at + COMPARE_PIECE)
    if (Buffer.compare(piece, zeroPiece.subarray(0, piece.length)) !== 0) return false
  }
  return true
}

/**
 * Whether the file at `path` holds exactly `expected` (the same answer as
 * `(await readSparseFile(path)).equals(expected)`), reading only its data extents, a piece at a
 * time into a buffer kept for later calls; its holes must be zeros in `expected`. A crash
 * test that checks a 40 MiB image after every one of its hundred cuts made and compared a fresh
 * 40 MiB buffer each time: the page faults and the garbage collection were most of its time.
 */
export async function fileEquals(path: string, expected: Uint8Array): Promise<boolean> {
  const file = await BlockFile.open(path, false)
  const buffer = comparePieces.pop() ?? Buffer.allocUnsafe(COMPARE_PIECE)
  try {
    const length = await file.length()
    if (length !== expected.length) return false
    const extents = (await dataExtentsIn(file, 0, length)) ?? [[0, length]]
    let checked = 0
    for (const [start, end] of [...extents, [length, length] as [number, number]]) {
      if (!allZero(expected.subarray(checked, start))) return false
      for (let at = start; at < end; at += COMPARE_PIECE) {
        const piece = buffer.subarray(0, Math.min(COMPARE_PIECE, end - at))
        await file.readAt(piece, at)
        if (Buffer.compare(piece, expected.subarray(at, at + piece.length)) !== 0) return false
      }
      checked = end
    }
    return true
  } finally {
    comparePieces.push(buffer)
    await file.close()
  }
}

/** Make a sparse file of `size` bytes (all zeros). */
export async function makeSparse(path: string, size: number): Promise<void> {
  const handle = await open(path, 'w')
  try {
    await handle.truncate(size)
  } finally {
    await handle.close()
  }
}

/** What {@link writeAddCow} writes, in the terms of the header. */
export interface AddCowFiles {
  /** Path of the add-cow file. */
  path: string
  imageName: string
  backingName?: string | null
  backingFormat?: string | null
  clusterBits?: number
  compatibleFeatures?: bigint
  /** Virtual size; the bitmap is sized for it. The image file itself is not touched. */
  size: number
  /** Bytes of bitmap to store after the header (default: all zero). */
  bitmap?: Uint8Array
}

/**
 * Write an add-cow file directly (header + zeroed bitmap area), bypassing createOverlay: for
 * chains and hostile files that create refuses to make.
 */
export async function writeAddCow(files: AddCowFiles): Promise<Buffer> {
  const clusterBits = files.clusterBits ?? 16
  const shape = geometry(clusterBits, files.size)
  const header = encodeHeader(
    {
      clusterBits,
      incompatibleFeatures: 0n,
      compatibleFeatures:
        files.compatibleFeatures ?? (files.backingName ? 0n : FEATURE_ALL_ALLOCATED),
      headerSize: headerSizeFor(clusterBits),
      backingName: files.backingName ?? null,
      backingFormat: files.backingName ? (files.backingFormat ?? 'raw') : null,
      imageName: files.imageName,
      imageFormat: 'raw',
    },
    files.path,
  )
  const content = Buffer.alloc(shape.fileLength)
  header.copy(content)
  if (files.bitmap) content.set(files.bitmap, header.length)
  await writeFile(files.path, content)
  return content
}

/** Change bytes of a file in place. */
export async function patchFile(path: string, offset: number, bytes: Uint8Array): Promise<void> {
  const handle = await open(path, 'r+')
  try {
    await handle.write(bytes, 0, bytes.length, offset)
  } finally {
    await handle.close()
  }
}

/** Read `length` bytes of a file at `offset` (zeros past its end). */
export async function readFileRange(path: string, offset: number, length: number): Promise<Buffer> {
  const data = await readFile(path)
  const out = Buffer.alloc(length)
  data.copy(out, 0, Math.min(offset, data.length), Math.min(offset + length, data.length))
  return out
}

/** A little-endian u32 as bytes. */
export function u32le(value: number): Buffer {
  const buffer = Buffer.alloc(4)
  buffer.writeUInt32LE(value >>> 0)
  return buffer
}

/** A little-endian u64 as bytes. */
export function u64le(value: bigint): Buffer {
  const buffer = Buffer.alloc(8)
  buffer.writeBigUInt64LE(value)
  return buffer
}

/** Create an overlay (recording trust and the base fingerprint in `library`, as the CLI does). */
export async function makeOverlay(
  library: Library,
  options: CreateOverlayOptions,
): Promise<string> {
  const result = await createOverlay(options)
  await library.trust(result.trust, 'created')
  await library.addImages([result.overlay])
  if (result.baseFingerprint) await library.recordBaseFingerprint(result.baseFingerprint)
  return result.overlay
}

/** A library in its own folder. */
export function libraryIn(folder: string): Library {
  return new Library(join(folder, 'library.json'))
}

/** Write guest data through the engine. */
export async function writeGuest(path: string, writes: [number, Buffer][]): Promise<void> {
  const disk = await openImage(path, { readOnly: false })
  try {
    for (const [offset, data] of writes) await disk.write(offset, data)
  } finally {
    await disk.close()
  }
}

/** The whole guest view of an image (probed, or in `format`). */
export async function guestView(path: string, format?: string): Promise<Buffer> {
  const disk = await openImage(path, { readOnly: true, ...(format ? { format } : {}) })
  try {
    return await disk.read(0, disk.size)
  } finally {
    await disk.close()
  }
}

/** Allocation bits of an overlay (one per allocation unit), and whether it is all allocated. */
export async function allocation(
  path: string,
): Promise<{ bits: boolean[]; allAllocated: boolean }> {
  const disk = await openImage(path, { readOnly: true })
  try {
    const { forEachAllocationRun, allocationCount, isAllAllocated } = disk
    if (!forEachAllocationRun || !allocationCount || !isAllAllocated)
      throw new Error(`${path} has no allocation map`)
    const bits = new Array<boolean>(allocationCount.call(disk).total).fill(false)
    forEachAllocationRun.call(disk, 0, bits.length, (first, stop, allocated) => {
      if (allocated) bits.fill(true, first, stop)
    })
    return { bits, allAllocated: isAllAllocated.call(disk) }
  } finally {
    await disk.close()
  }
}

/**
 * A 4 MiB overlay `ov.add-cow` over a 3 MiB sparse `base.raw` in `dir` (patterned data at 0 and
 * just past 2 MiB), with 100,000 guest bytes written at 500,000: the scene stream and rebase start from.
 */
export async function patternedOverlayScene(dir: string, library: Library): Promise<string> {
  await makeSparseRaw(join(dir, 'base.raw'), 3 * 1024 * 1024, [
    [0, pattern(1024 * 1024, 1)],
    [2 * 1024 * 1024 + 5, pattern(300_000, 2)],
  ])
  const overlay = await makeOverlay(library, {
    overlay: join(dir, 'ov.add-cow'),
    backing: 'base.raw',
    backingFormat: 'raw',
    size: 4 * 1024 * 1024,
  })
  await writeGuest(overlay, [[500_000, pattern(100_000, 3)]])
  return overlay
}

/** What {@link perTestFolder} gives a test: its folder, a library in it, disks it opened. */
export interface TestFolder {
  /** The current test's folder (fresh for each test). */
  readonly dir: string
  /** A library whose file is in {@link dir}. */
  readonly library: Library
  /** Open an image; it is closed after the test, before the folder is removed. */
  opened(path: string, readOnly?: boolean): Promise<Disk>
}

/**
 * A fresh temporary folder, with a library in it, for every test of the calling file: made
 * before each test, removed after it with every disk opened through `opened`. Call it at the
 * top of a test file; read its fields inside the tests.
 */
export function perTestFolder(prefix = 'addcow-test-'): TestFolder {
  let current: { dir: string; library: Library; cleanup: () => Promise<void> } | null = null
  const disks: Disk[] = []
  beforeEach(async () => {
    const made = await tempDir(prefix)
    current = { dir: made.path, library: libraryIn(made.path), cleanup: made.cleanup }
  })
  afterEach(async () => {
    for (const disk of disks.splice(0)) await disk.close().catch(() => undefined)
    await current?.cleanup()
    current = null
  })
  const now = (): NonNullable<typeof current> => {
    if (!current) throw new Error('perTestFolder: read its fields inside a test')
    return current
  }
  return {
    get dir() {
      return now().dir
    },
    get library() {
      return now().library
    },
    async opened(path, readOnly = false) {
      const disk = await openImage(path, { readOnly })
      disks.push(disk)
      return disk
    },
  }
}
