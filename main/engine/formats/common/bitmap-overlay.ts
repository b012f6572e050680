import type { ImageInfo } from '../../../../shared/image-types'
import type {
  AllocationVisitor,
  BackingLink,
  BlockExtent,
  Disk,
  DiskCapabilities,
  WriteOptions,
} from '../../disk'
import { EngineError } from '../../errors'
import { checkRange, overlayStatus, readBelow, runLimited, serialQueue } from '../../extents'
import type { BlockFile } from '../../file'
import { zeroes } from '../../file'
import { ClusterBitmap } from './bitmap'

/** Pieces of one read that may be in flight at once. */
const IO_PARALLELISM = 8
/** Largest allocation bitmap held in memory (2^32 units). */
export const MAX_OVERLAY_BITMAP_BYTES = 512 * 1024 * 1024

/** What a bitmap-overlay format tells the generic disk. */
export interface BitmapOverlayLayout {
  path: string
  format: string
  size: number
  /** Bytes per bitmap bit (512 for sector formats, the cluster size for cluster formats). */
  unit: number
  bitmap: ClusterBitmap
  /** The file that holds the bitmap, and where the bitmap starts in it. */
  metaFile: BlockFile
  bitmapOffset: number
  /** The file that holds guest data, and the host offset of guest offset 0 in it. */
  dataFile: BlockFile
  dataOffset: number
  backing: Disk | null
  /** Whether the disk accepts writes (the layout is one this tool may write). */
  writable: boolean
  /** Every unit reads from the data file; the bitmap is not consulted. */
  allAllocated: boolean
  /** Describe the layer for `info`. */
  describe(disk: BitmapOverlayDisk): Promise<ImageInfo>
  /** The backing file as stored, with the format the open used (null: none named). */
  backingLink: BackingLink | null
  /** Every file of the layer, its own first. */
  files: string[]
}

/**
 * A disk whose allocation is a bitmap with one bit per fixed unit and whose allocated data sits
 * in a data file at `dataOffset + guest offset`: QEMU cow and user-mode Linux COW (data inside
 * the cow file, one bit per sector), and the earlier add-cow drafts (data in the image file at
 * guest offsets). Unallocated units read from the backing disk, or as zeros.
 *
 * Writes (where the layout allows them) fill the uncovered part of a partly written unallocated
 * unit from below, write the data, then set the bits in memory; flush syncs the data file, then
 * writes the dirty bitmap bytes and syncs the bitmap's file. Writes are serialised.
 */
export class BitmapOverlayDisk implements Disk {
  readonly capabilities: DiskCapabilities
  private readonly serialise = serialQueue()
  private closed = false

  constructor(readonly layout: BitmapOverlayLayout) {
    this.capabilities = {
      write: layout.writable,
      fastZero: false,
      discard: false,
      blockStatus: true,
      multiConn: false,
    }
  }

  get path(): string {
    return this.layout.path
  }

  get format(): string {
    return this.layout.format
  }

  get size(): number {
    return this.layout.size
  }

  get readOnly(): boolean {
    return !this.layout.writable
  }

  get allocationUnit(): number {
    return this.layout.unit
  }

  get backing(): Disk | null {
    return this.layout.backing
  }

  /** Units whose bit is set (all of them when the layer is wholly allocated). */
  get allocatedUnits(): number {
    return this.layout.allAllocated ? this.totalUnits : this.layout.bitmap.allocatedCount
  }

  get totalUnits(): number {
    return Math.ceil(this.size / this.layout.unit)
  }

  /** Whether unit `index` reads from the data file. */
  isAllocated(index: number): boolean {
    return this.layout.allAllocated || this.layout.bitmap.get(index)
  }

  files(): string[] {
    return [...this.layout.files]
  }

  backingLink(): BackingLink | null {
    return this.layout.backingLink
  }

  allocationCount(): { allocated: number; total: number } {
    return { allocated: this.allocatedUnits, total: this.totalUnits }
  }

  /** Runs of units [first, end) that the layer holds (all of them when wholly allocated). */
  forEachAllocationRun(first: number, end: number, visit: AllocationVisitor): void {
    if (first >= end) return
    if (this.layout.allAllocated) visit(first, end, true)
    else this.layout.bitmap.forEachRun(first, end, visit)
  }

  countAllocated(first: number, end: number): number {
    const stop = Math.min(end, this.totalUnits)
    if (first >= stop) return 0
    return this.layout.allAllocated ? stop - first : this.layout.bitmap.countRange(first, stop)
  }

  nextAllocatedRun(first: number, end: number): [number, number] | null {
    const stop = Math.min(end, this.totalUnits)
    if (first >= stop) return null
    if (this.layout.allAllocated) return [first, stop]
    const start = this.layout.bitmap.findNext(first, stop, true)
    if (start < 0) return null
    const after = this.layout.bitmap.findNext(start, stop, false)
    return [start, after < 0 ? stop : after]
  }

  private assertOpen(): void {
    if (this.closed)
      throw new EngineError('BAD_REQUEST', `${this.path} is closed.`, { path: this.path })
  }

  /** Call `visit` with runs of units in [offset, end), clamped to the range. */
  private runs(
    offset: number,
    end: number,
    visit: (start: number, stop: number, allocated: boolean) => void,
  ): void {
    if (this.layout.allAllocated) {
      visit(offset, end, true)
      return
    }
    const unit = this.layout.unit
    this.layout.bitmap.forEachRun(
      Math.floor(offset / unit),
      Math.ceil(end / unit),
      (first, stop, allocated) => {
        visit(Math.max(first * unit, offset), Math.min(stop * unit, end), allocated)
      },
    )
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buffer = Buffer.allocUnsafe(length)
    await this.readInto(buffer, offset)
    return buffer
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    this.assertOpen()
    checkRange(this.path, this.size, offset, target.length)
    if (target.length === 0) return
    const tasks: (() => Promise<void>)[] = []
    this.runs(offset, offset + target.length, (start, stop, allocated) => {
      const piece = target.subarray(start - offset, stop - offset)
      tasks.push(
        allocated
          ? () => this.layout.dataFile.readAt(piece, this.layout.dataOffset + start)
          : () => readBelow(this.backing, piece, start),
      )
    })
    await runLimited(tasks, IO_PARALLELISM)
  }

  private assertWritable(): void {
    this.assertOpen()
    if (this.readOnly) {
      throw new EngineError('READ_ONLY', `${this.path} (${this.format}) is open read-only.`, {
        path: this.path,
      })
    }
  }

  async write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    this.assertWritable()
    checkRange(this.path, this.size, offset, data.length)
    if (data.length === 0) return
    await this.serialise(async () => {
      const { unit, dataFile, dataOffset, bitmap } = this.layout
      const end = offset + data.length
      const first = Math.floor(offset / unit)
      const last = Math.floor((end - 1) / unit)
      if (!this.isAllocated(first) && offset > first * unit) await this.fill(first * unit, offset)
      const tailEnd = Math.min((last + 1) * unit, this.size)
      if (!this.isAllocated(last) && end < tailEnd) await this.fill(end, tailEnd)
      await dataFile.writeAt(data, dataOffset + offset)
      if (!this.layout.allAllocated) bitmap.setRange(first, last + 1)
    })
    if (options?.fua) await this.flush()
  }

  /** Copy [start, end) from below into the data file (the partial-unit fill). */
  private async fill(start: number, end: number): Promise<void> {
    const buffer = Buffer.allocUnsafe(end - start)
    await readBelow(this.backing, buffer, start)
    await this.layout.dataFile.writeAt(buffer, this.layout.dataOffset + start)
  }

  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.assertWritable()
    checkRange(this.path, this.size, offset, length)
    for (let done = 0; done < length; done += 1024 * 1024) {
      await this.write(offset + done, zeroes(Math.min(1024 * 1024, length - done)))
    }
    if (options?.fua) await this.flush()
  }

  async discard(offset: number, length: number): Promise<void> {
    this.assertOpen()
    checkRange(this.path, this.size, offset, length)
  }

  async flush(): Promise<void> {
    this.assertOpen()
    if (this.readOnly) return
    await this.serialise(async () => {
      const chunks = this.layout.bitmap.takeDirty()
      try {
        await this.layout.dataFile.datasync()
        if (chunks.length === 0) return
        for (const chunk of chunks)
          await this.layout.metaFile.writeAt(chunk.data, this.layout.bitmapOffset + chunk.offset)
        await this.layout.metaFile.datasync()
      } catch (error) {
        this.layout.bitmap.markDirty(chunks.map((chunk) => chunk.offset))
        throw error
      }
    })
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    this.assertOpen()
    checkRange(this.path, this.size, offset, length)
    if (length === 0) return []
    const runs: [number, number, boolean][] = []
    this.runs(offset, offset + length, (start, stop, allocated) =>
      runs.push([start, stop, allocated]),
    )
    return overlayStatus(this.backing, runs)
  }

  info(): Promise<ImageInfo> {
    return this.layout.describe(this)
  }

  async close(): Promise<void> {
    if (this.closed) return
    let failure: unknown = null
    try {
      if (!this.readOnly) await this.flush()
    } catch (error) {
      failure = error
    }
    this.closed = true
    const files = new Set([this.layout.dataFile, this.layout.metaFile])
    for (const file of files) await file.close().catch((error: unknown) => (failure ??= error))
    if (this.backing) await this.backing.close().catch((error: unknown) => (failure ??= error))
    if (failure) throw failure
  }
}

/**
 * Throw CORRUPT_IMAGE unless a file of `fileLength` bytes holds a `bytes`-byte bitmap at
 * `offset`: a bound every reader checks, also when a flag (ALL_ALLOCATED) says the bitmap need
 * not be read.
 */
export function assertBitmapFits(
  path: string,
  offset: number,
  bytes: number,
  fileLength: number,
  what: string,
): void {
  if (offset + bytes > fileLength) {
    throw new EngineError(
      'CORRUPT_IMAGE',
      `${path} is ${fileLength} bytes long, too short for its ${bytes}-byte ${what} bitmap at offset ${offset}.`,
      { path, field: 'file length', value: fileLength },
    )
  }
}

/** Read a bitmap of `units` bits at `offset` of `file`, checking its size and the file's length. */
export async function loadBitmap(
  file: BlockFile,
  path: string,
  offset: number,
  units: number,
  fileLength: number,
  what: string,
): Promise<ClusterBitmap> {
  const bytes = Math.ceil(units / 8)
  if (bytes > MAX_OVERLAY_BITMAP_BYTES) {
    throw new EngineError(
      'SIZE_LIMIT',
      `${path} needs a ${bytes}-byte ${what} bitmap; the limit is ${MAX_OVERLAY_BITMAP_BYTES}.`,
      { path, field: 'bitmap size', value: bytes },
    )
  }
  assertBitmapFits(path, offset, bytes, fileLength, what)
  const data = Buffer.alloc(bytes)
  await file.readAt(data, offset)
  return new ClusterBitmap(data, units)
}
