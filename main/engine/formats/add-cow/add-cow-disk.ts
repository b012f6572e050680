import type { ImageInfo, NameResolution, NameVerdictReason } from '../../../../shared/image-types'
import type {
  AllocationVisitor,
  BackingLink,
  BlockExtent,
  Disk,
  DiskCapabilities,
  FileMapping,
  FormatDriver,
  OpenOptions,
  WriteOptions,
} from '../../disk'
import { HOLDS_NOTHING } from '../../disk'
import { stat } from 'node:fs/promises'
import { bounded, EngineError, quote, wrapIoError } from '../../errors'
import { assertFollowable, judgeName, withoutRealPath } from '../../names'
import { checkRange, overlayStatus, readBelow, readInPieces, runLimited } from '../../extents'
import { BlockFile, readCachedPiece, readFilePieces, zeroes } from '../../file'
import { growFile } from '../../fs'
import { readBatchFunction } from '../../native/index'
import { RawDisk } from '../raw/raw'
import { ClusterBitmap } from '../common/bitmap'
import {
  fillBitmap,
  readHeaderFile,
  restoreFeatures,
  setBackingLink,
  writeCompatibleFeatures,
} from './edit'
import {
  FEATURE_ALL_ALLOCATED,
  FIELDS,
  geometry,
  imageFormatIssue,
  MAX_BITMAP_BYTES,
  parseHeader,
  type AddCowHeader,
  type BitmapGeometry,
  type HeaderOddities,
} from './header'
import { ADD_COW_FORMAT } from './format'
import { fileStatus } from '../common/sparse'

export { MAX_BITMAP_BYTES } from './header'

/** Pieces of one request that may be in flight at once. */
const IO_PARALLELISM = 8

/** Refusals of an image file that is still a regular file, whose length info can show. */
const MEASURABLE_REASONS: ReadonlySet<NameVerdictReason> = new Set([
  'outside-folder',
  'self',
  'same-file',
])
/**
 * Largest piece of a read issued as one call: longer runs are split so that the copies out of
 * the page cache spread over the thread pool (tests/bench/read-sequential.ts).
 */
const READ_PIECE = 512 * 1024
/** Bytes of zeroes written per request by writeZeroes where it must write. */
const ZERO_CHUNK = 1024 * 1024
/** Cluster-sized buffers of finished copy-on-write fills kept for the next fills. */
const MAX_SPARE_FILL_BUFFERS = 16

/**
 * An add-cow overlay (FORMATS.md §1): guest data in a raw image file at guest offsets, a
 * bitmap of written clusters in the add-cow file, and unwritten clusters read from the backing
 * disk (or as zeros past its end or without one).
 *
 * Concurrency: writes to allocated clusters go straight to the image file. A write touching an
 * unallocated cluster holds that cluster's lock while it fills the uncovered part from the
 * backing disk, writes, and sets the bit; locks are taken in ascending order, so writes to
 * different clusters run in parallel and never deadlock.
 *
 * Durability: a bit is set in memory only after its data reached the image file; flush takes a
 * copy of the dirty bitmap chunks, syncs the image file, then writes and syncs the chunks. So a
 * bit is never durable before the data it exposes.
 */
export class AddCowDisk implements Disk {
  readonly format = 'add-cow'
  capabilities: DiskCapabilities
  private readonly locks = new Map<number, Promise<void>>()
  /** Buffers of finished fills, reused (see {@link takeFillBuffer}). */
  private readonly fillBuffers: Buffer[] = []
  private flushing: Promise<void> = Promise.resolve()
  private headerDirty = false
  private closed = false
  private frozen = false

  private constructor(
    readonly path: string,
    private readonly meta: BlockFile,
    /** Null only in a lenient (inspection) open whose image name the policy refused. */
    private readonly imageHandle: BlockFile | null,
    readonly backing: Disk | null,
    readonly header: AddCowHeader,
    readonly oddities: HeaderOddities,
    readonly geometry: BitmapGeometry,
    private readonly bitmap: ClusterBitmap | null,
    readonly names: NameResolution[],
    private readonly metaLength: number,
    /** The virtual size: the image file's length when opened. */
    readonly size: number,
  ) {
    this.capabilities = {
      write: meta.writable,
      fastZero: true,
      discard: false,
      blockStatus: true,
      multiConn: false,
    }
  }

  /** Open an add-cow file (see {@link addCowDriver}). */
  static async open(path: string, options: OpenOptions): Promise<AddCowDisk> {
    const meta = await BlockFile.open(path, !options.readOnly)
    const opened: { close(): Promise<void> }[] = [meta]
    try {
      const metaLength = await meta.length()
      const head = Buffer.alloc(Math.min(metaLength, 2 * 1024 * 1024))
      await meta.readAt(head, 0)
      // Read only the fixed part first: header_size is validated before it sizes any read.
      const { header, oddities } = parseHeader(head, path)
      const unsupported = imageFormatIssue(path, header.imageFormat)
      if (unsupported?.error) throw unsupported.error
      const names: NameResolution[] = []
      let imageVerdict = await options.judgeDataFile(path, header.imageName, header.imageFormat)
      // The backing name is judged before the image file is opened: an image file that is the
      // base itself is refused (SAME_FILE), or, on an inspection open, shown and not followed.
      const backingVerdict =
        header.backingName !== null && header.backingFormat !== null
          ? await judgeName(path, header.backingName, header.backingFormat, options.policy)
          : null
      if (
        backingVerdict &&
        backingVerdict.reason !== 'missing' &&
        imageVerdict.reason !== 'missing' &&
        backingVerdict.realPath === imageVerdict.realPath
      ) {
        if (!options.lenient) {
          throw new EngineError(
            'SAME_FILE',
            `The image file ${quote(header.imageName)} and the backing file ${quote(backingVerdict.stored)} of ${path} are the same file (${bounded(imageVerdict.realPath)}).`,
            { path, field: 'image name', value: header.imageName },
          )
        }
        imageVerdict = { ...imageVerdict, followed: false, reason: 'same-file' }
      }
      names.push(withoutRealPath(imageVerdict))
      let image: BlockFile | null = null
      let virtualSize: number
      if (imageVerdict.followed) {
        image = await BlockFile.open(imageVerdict.resolved, !options.readOnly)
        opened.push(image)
        virtualSize = await image.length()
      } else {
        // Lenient (inspection) open only: the refused image file is never opened; a regular file
        // (outside the folder, or one the chain already uses) is measured with stat so info can
        // still show the geometry.
        virtualSize = MEASURABLE_REASONS.has(imageVerdict.reason)
          ? await statLength(imageVerdict.resolved)
          : 0
      }
      const allAllocated = (header.compatibleFeatures & FEATURE_ALL_ALLOCATED) !== 0n
      const shape = geometry(header.clusterBits, virtualSize)

      let backing: Disk | null = null
      if (backingVerdict && header.backingName !== null && header.backingFormat !== null) {
        names.unshift(withoutRealPath(backingVerdict))
        if (!allAllocated || options.lenient) {
          backing = await options.openBacking(path, header.backingName, header.backingFormat)
          if (backing) opened.push(backing)
        }
      }

      if (!allAllocated && shape.bitmapBytes > MAX_BITMAP_BYTES) {
        throw new EngineError(
          'SIZE_LIMIT',
          `${path} needs a ${shape.bitmapBytes}-byte bitmap for its ${virtualSize}-byte image file; the limit is ${MAX_BITMAP_BYTES}.`,
          { path, field: 'virtual size', value: virtualSize },
        )
      }
      // A bound every reader checks, with ALL_ALLOCATED set too (FORMATS.md): a file cut short
      // of its bitmap is damaged even when the bitmap is not consulted.
      if (metaLength < header.headerSize + shape.bitmapBytes) {
        throw new EngineError(
          'CORRUPT_IMAGE',
          `${path} is ${metaLength} bytes long, too short for the bitmap of its ${virtualSize}-byte image file (needs ${header.headerSize + shape.bitmapBytes}).`,
          { path, field: 'file length', value: metaLength },
        )
      }
      let bitmap: ClusterBitmap | null = null
      if (!allAllocated) {
        const bytes = Buffer.alloc(shape.bitmapBytes)
        await meta.readAt(bytes, header.headerSize)
        bitmap = new ClusterBitmap(bytes, shape.clusters)
      }
      return new AddCowDisk(
        path,
        meta,
        image,
        backing,
        header,
        oddities,
        shape,
        bitmap,
        names,
        metaLength,
        virtualSize,
      )
    } catch (error) {
      for (const file of opened.reverse()) await file.close().catch(() => undefined)
      throw error
    }
  }

  get readOnly(): boolean {
    return this.frozen || !this.meta.writable
  }

  async freeze(): Promise<void> {
    this.assertOpen()
    if (this.readOnly) return
    await this.flush()
    this.frozen = true
    this.capabilities = { ...this.capabilities, write: false }
  }

  get allocationUnit(): number {
    return this.geometry.clusterSize
  }

  get clusterSize(): number {
    return this.geometry.clusterSize
  }

  /** ALL_ALLOCATED is set: every read and write goes to the image file. */
  get allAllocated(): boolean {
    return this.bitmap === null || (this.header.compatibleFeatures & FEATURE_ALL_ALLOCATED) !== 0n
  }

  /** Clusters whose bit is set (all of them when ALL_ALLOCATED). */
  get allocatedClusters(): number {
    return this.bitmap === null ? this.geometry.clusters : this.bitmap.allocatedCount
  }

  /** Whether cluster `index` reads from the image file. */
  isAllocated(index: number): boolean {
    return this.allAllocated || (this.bitmap?.get(index) ?? true)
  }

  /**
   * Visit the runs of equal allocation over clusters [first, end) (for commit, stream, check);
   * with ALL_ALLOCATED the whole range is one allocated run.
   */
  forEachAllocationRun(first: number, end: number, visit: AllocationVisitor): void {
    if (first >= end) return
    if (this.allAllocated || !this.bitmap) {
      visit(first, end, true)
      return
    }
    this.bitmap.forEachRun(first, end, visit)
  }

  countAllocated(first: number, end: number): number {
    const stop = Math.min(end, this.geometry.clusters)
    if (first >= stop) return 0
    if (this.allAllocated || !this.bitmap) return stop - first
    return this.bitmap.countRange(first, stop)
  }

  nextAllocatedRun(first: number, end: number): [number, number] | null {
    const stop = Math.min(end, this.geometry.clusters)
    if (first >= stop) return null
    if (this.allAllocated || !this.bitmap) return [first, stop]
    const start = this.bitmap.findNext(first, stop, true)
    if (start < 0) return null
    const after = this.bitmap.findNext(start, stop, false)
    return [start, after < 0 ? stop : after]
  }

  /**
   * Mark clusters [first, end) allocated after the caller wrote their whole data to the image
   * file itself (stream, rebase, undo). Sets ALL_ALLOCATED when the bitmap becomes full. Durable
   * at the next flush, which syncs the image file before the bitmap.
   */
  markAllocated(first: number, end: number): void {
    this.assertWritable()
    if (!this.bitmap || this.allAllocated || first >= end) return
    const wasFull = this.bitmap.isFull
    this.bitmap.setRange(first, end)
    if (!wasFull && this.bitmap.isFull) this.markAllAllocated()
  }

  /**
   * Mark clusters [first, end) unallocated (commit's emptying): they read from the backing
   * file again. Refused with ALL_ALLOCATED set. Durable at the next flush.
   */
  markUnallocated(first: number, end: number): void {
    this.assertWritable()
    if (!this.bitmap || this.allAllocated) {
      throw new EngineError(
        'NOT_CAPABLE',
        `${this.path} has ALL_ALLOCATED set; its clusters cannot be unallocated one by one.`,
        {
          path: this.path,
          field: 'compatible features',
        },
      )
    }
    this.bitmap.clearRange(first, end)
  }

  /** The add-cow file, then the image file (as named, resolved: also after a lenient open). */
  files(): string[] {
    const image = this.names[this.names.length - 1]
    return [this.path, image?.resolved ?? this.header.imageName]
  }

  backingLink(): BackingLink | null {
    return this.header.backingName === null
      ? null
      : { name: this.header.backingName, format: this.header.backingFormat }
  }

  /** The image file: guest data at guest offsets. */
  dataFile(): BlockFile {
    return this.image
  }

  allocationCount(): { allocated: number; total: number } {
    return { allocated: this.allocatedClusters, total: this.geometry.clusters }
  }

  isAllAllocated(): boolean {
    return this.allAllocated
  }

  /**
   * Set ALL_ALLOCATED once every bit is set: flush (the image file, then the bitmap, and the
   * flag if a write already set it in memory), then write the flag if it is still clear.
   */
  async setAllAllocated(): Promise<void> {
    this.assertWritable()
    if (this.bitmap && !this.bitmap.isFull && !this.allAllocated) {
      throw new EngineError(
        'BAD_REQUEST',
        `${this.path} still reads ${this.bitmap.clusters - this.bitmap.allocatedCount} clusters from its backing file; ALL_ALLOCATED cannot be set.`,
        { path: this.path, field: 'compatible features' },
      )
    }
    await this.flush()
    if ((this.header.compatibleFeatures & FEATURE_ALL_ALLOCATED) === 0n) {
      // The bitmap was already full when opened (a write sets the flag only on the change).
      this.header.compatibleFeatures |= FEATURE_ALL_ALLOCATED
      await writeCompatibleFeatures(this.meta, this.header.compatibleFeatures)
    }
  }

  /**
   * Hand ALL_ALLOCATED over to a full bitmap (the guest view is unchanged), clear the flag,
   * and close: the overlay reads its backing file again after a fresh open.
   */
  async clearAllAllocatedAndClose(): Promise<void> {
    this.assertWritable()
    if ((this.header.compatibleFeatures & FEATURE_ALL_ALLOCATED) !== 0n) {
      await fillBitmap(this.meta, this.header, this.size)
      this.header.compatibleFeatures &= ~FEATURE_ALL_ALLOCATED
      await writeCompatibleFeatures(this.meta, this.header.compatibleFeatures)
      this.headerDirty = false
      this.bitmap?.takeDirty()
    }
    await this.close()
  }

  /**
   * Grow the add-cow file to the bitmap of `size`, then the image file to `size` (the virtual
   * size), then close. In that order a crash between the two leaves a longer add-cow file (a
   * leak `check -r leaks` cuts), never an image file the bitmap does not cover. A size whose
   * bitmap would pass {@link MAX_BITMAP_BYTES} (which no open would accept) is refused before
   * anything changes.
   */
  async growAndClose(size: number): Promise<void> {
    this.assertWritable()
    const shape = geometry(this.header.clusterBits, size)
    // The bound every open checks (a flattened overlay never reads its bitmap).
    if (!this.allAllocated && shape.bitmapBytes > MAX_BITMAP_BYTES) {
      // Closed whatever happens, as the name says: the caller no longer holds it.
      await this.close()
      throw new EngineError(
        'SIZE_LIMIT',
        `Size ${size} needs a ${shape.bitmapBytes}-byte bitmap at ${this.clusterSize}-byte clusters in ${this.path}; the limit is ${MAX_BITMAP_BYTES}.`,
        { path: this.path, field: 'size', value: size },
      )
    }
    const image = this.image
    const grow = size > this.size
    await this.close()
    if (!grow) return
    const oldLength = this.metaLength
    await growFile(this.path, shape.fileLength)
    try {
      await growFile(image.path, size)
    } catch (error) {
      // The image file could not grow (a file system's size limit): give the add-cow file its
      // old length back, so nothing changed.
      await BlockFile.open(this.path, true)
        .then(async (meta) => {
          try {
            await meta.truncate(oldLength)
            await meta.sync()
          } finally {
            await meta.close()
          }
        })
        .catch(() => undefined)
      throw error
    }
  }

  /**
   * Shrink the virtual size to `size` bytes and close. The caller made sure nothing but zeros
   * is cut off. Crash-safe order: the image file is cut first (its length is the virtual size,
   * so the disk is now the smaller one, and bits past its last cluster are ignored on read, as
   * FORMATS.md requires); then those bits are cleared and the add-cow file is cut to the new
   * bitmap's length, and synced. A crash between the two leaves stray bits and a long add-cow
   * file, which `check -r` repairs.
   */
  async shrinkAndClose(size: number): Promise<void> {
    this.assertWritable()
    const { headerSize, clusterBits } = this.header
    const shrink = size < this.size
    const imagePath = this.image.path
    await this.close()
    if (!shrink) return
    const image = await BlockFile.open(imagePath, true)
    try {
      await image.truncate(size)
      await image.sync()
    } finally {
      await image.close()
    }
    const metaLength = geometry(clusterBits, size).fileLength
    const clusters = Math.ceil(size / 2 ** clusterBits)
    const meta = await BlockFile.open(this.path, true)
    try {
      await meta.truncate(metaLength)
      let from = headerSize + Math.floor(clusters / 8)
      if (clusters % 8 !== 0) {
        const byte = Buffer.alloc(1)
        await meta.readAt(byte, from)
        byte[0]! &= (1 << (clusters % 8)) - 1
        await meta.writeAt(byte, from)
        from++
      }
      const zeros = Buffer.alloc(Math.min(1024 * 1024, Math.max(0, metaLength - from)))
      for (let at = from; at < metaLength; at += zeros.length) {
        await meta.writeAt(zeros.subarray(0, Math.min(zeros.length, metaLength - at)), at)
      }
      await meta.sync()
    } finally {
      await meta.close()
    }
  }

  /** The compatible features, for a rollback to put back (see the driver's restoreState). */
  savedState(): string {
    return `0x${this.header.compatibleFeatures.toString(16)}`
  }

  /** The length of the add-cow file when it was opened. */
  get metadataLength(): number {
    return this.metaLength
  }

  /** The image file (for operations that copy data in place). */
  get imageFile(): BlockFile {
    return this.image
  }

  /** The open image file; throws the policy's refusal after a lenient open that refused it. */
  private get image(): BlockFile {
    if (this.imageHandle) return this.imageHandle
    const verdict = this.names[this.names.length - 1]
    if (verdict) assertFollowable(this.path, 'image file', verdict)
    throw new EngineError('INTERNAL', `The image file of ${this.path} is not open.`, {
      path: this.path,
    })
  }

  /** The add-cow file. */
  get metadataFile(): BlockFile {
    return this.meta
  }

  private assertOpen(): void {
    if (this.closed)
      throw new EngineError('BAD_REQUEST', `${this.path} is closed.`, { path: this.path })
  }

  private assertWritable(): void {
    this.assertOpen()
    if (this.readOnly)
      throw new EngineError('READ_ONLY', `${this.path} is open read-only.`, { path: this.path })
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this.path, this.size, offset, length)
    const buffer = Buffer.allocUnsafe(length)
    await this.readInto(buffer, offset)
    return buffer
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    this.assertOpen()
    checkRange(this.path, this.size, offset, target.length)
    if (target.length === 0) return
    const bitmap = this.allAllocated ? null : this.bitmap
    if (!bitmap) {
      const image = this.image
      const whole = readFilePieces(target, [image.fd, offset, 0, target.length])
      if (whole) {
        await whole.catch((error: unknown) => {
          throw wrapIoError(error, this.path, `read ${target.length} bytes at offset ${offset} of`)
        })
        return
      }
      await readInPieces(target, offset, READ_PIECE, IO_PARALLELISM, (part, at) =>
        image.readAt(part, at),
      )
      return
    }
    if (this.readClusterCached(target, offset, bitmap)) return
    if (readBatchFunction()) return this.readBatched(target, offset, bitmap)
    const end = offset + target.length
    const tasks: (() => Promise<void>)[] = []
    bitmap.forEachRun(
      Math.floor(offset / this.clusterSize),
      Math.ceil(end / this.clusterSize),
      (first, stop, allocated) => {
        const finish = Math.min(stop * this.clusterSize, end)
        for (
          let start = Math.max(first * this.clusterSize, offset);
          start < finish;
          start += READ_PIECE
        ) {
          const at = start
          const piece = target.subarray(at - offset, Math.min(finish, at + READ_PIECE) - offset)
          tasks.push(
            allocated
              ? () => this.image.readAt(piece, at)
              : () => readBelow(this.backing, piece, at),
          )
        }
      },
    )
    await runLimited(tasks, IO_PARALLELISM)
  }

  /**
   * The plain files that hold [offset, offset + length): the image file for the clusters this
   * layer holds, the layers below (as they map themselves) for the others, zeros past the end of
   * a shorter backing file or where there is none. Null when a layer below cannot map itself.
   */
  mapFiles(offset: number, length: number): FileMapping | null {
    this.assertOpen()
    checkRange(this.path, this.size, offset, length)
    const bitmap = this.allAllocated ? null : this.bitmap
    const imageFd = this.image.fd
    if (!bitmap) return { pieces: [imageFd, offset, length], release: HOLDS_NOTHING }
    const clusterSize = this.clusterSize
    const end = offset + length
    const backing = this.backing
    const pieces: number[] = []
    const below: FileMapping[] = []
    let mappable = true
    bitmap.forEachRun(
      Math.floor(offset / clusterSize),
      Math.ceil(end / clusterSize),
      (first, stop, allocated) => {
        if (!mappable) return
        const start = Math.max(first * clusterSize, offset)
        const finish = Math.min(stop * clusterSize, end)
        if (allocated) {
          pieces.push(imageFd, start, finish - start)
          return
        }
        const available = backing ? Math.max(0, Math.min(finish, backing.size) - start) : 0
        if (available > 0) {
          const mapping = backing!.mapFiles?.(start, available) ?? null
          if (!mapping) {
            mappable = false
            return
          }
          below.push(mapping)
          for (const value of mapping.pieces) pieces.push(value)
        }
        if (start + available < finish) pieces.push(-1, 0, finish - start - available)
      },
    )
    const release = (): void => {
      for (const mapping of below) mapping.release()
    }
    if (!mappable) {
      release()
      return null
    }
    return { pieces, release: below.length > 0 ? release : HOLDS_NOTHING }
  }

  /**
   * Fill `target` now if it lies inside one cluster whose bytes live in a plain file (the image
   * file, or a raw base) and the page cache holds them: the usual small guest read, spared the
   * batching of {@link readBatched}. False when it does not apply; the caller then reads.
   */
  private readClusterCached(target: Uint8Array, offset: number, bitmap: ClusterBitmap): boolean {
    const cluster = Math.floor(offset / this.clusterSize)
    const end = offset + target.length
    if (Math.floor((end - 1) / this.clusterSize) !== cluster) return false
    const backing = this.backing
    const fd = bitmap.get(cluster)
      ? this.image.fd
      : backing instanceof RawDisk && end <= backing.size
        ? backing.fd
        : null
    if (fd === null) return false
    try {
      return readCachedPiece(fd, target, offset)
    } catch (error) {
      throw wrapIoError(error, this.path, `read ${target.length} bytes at offset ${offset} of`)
    }
  }

  /**
   * readInto through the native addon: every run of clusters that lives in a plain file (the
   * image file, or a raw base) becomes one pread in a batch, and a request becomes a few
   * thread-pool jobs instead of one per run, which is what alternating runs of allocated and
   * unallocated clusters otherwise cost. Other bases are read through their own disk.
   */
  private async readBatched(
    target: Uint8Array,
    offset: number,
    bitmap: ClusterBitmap,
  ): Promise<void> {
    const end = offset + target.length
    const clusterSize = this.clusterSize
    const backing = this.backing
    const rawBase = backing instanceof RawDisk ? backing : null
    // Flat [fd, position, targetOffset, length] quadruples, in guest order.
    const pieces: number[] = []
    const others: (() => Promise<void>)[] = []
    const imageFd = this.image.fd
    bitmap.forEachRun(
      Math.floor(offset / clusterSize),
      Math.ceil(end / clusterSize),
      (first, stop, allocated) => {
        const start = Math.max(first * clusterSize, offset)
        const finish = Math.min(stop * clusterSize, end)
        if (allocated) {
          pieces.push(imageFd, start, start - offset, finish - start)
        } else if (!backing || rawBase) {
          for (const value of this.piecesBelow(target, offset, [[start, finish]])!)
            pieces.push(value)
        } else {
          others.push(() =>
            readBelow(this.backing, target.subarray(start - offset, finish - offset), start),
          )
        }
      },
    )
    try {
      await Promise.all([readFilePieces(target, pieces), runLimited(others, IO_PARALLELISM)])
    } catch (error) {
      throw wrapIoError(error, this.path, `read ${target.length} bytes at offset ${offset} of`)
    }
  }

  private async lock(cluster: number): Promise<() => void> {
    for (;;) {
      const held = this.locks.get(cluster)
      if (!held) break
      await held
    }
    let release!: () => void
    this.locks.set(
      cluster,
      new Promise<void>((resolve) => {
        release = () => {
          this.locks.delete(cluster)
          resolve()
        }
      }),
    )
    return release
  }

  async write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    this.assertWritable()
    checkRange(this.path, this.size, offset, data.length)
    if (data.length === 0) return
    if (this.allAllocated || !this.bitmap) {
      await this.image.writeAt(data, offset)
      if (options?.fua) await this.image.datasync()
      return
    }
    const bitmap = this.bitmap
    const clusterSize = this.clusterSize
    const end = offset + data.length
    const first = Math.floor(offset / clusterSize)
    const last = Math.floor((end - 1) / clusterSize)
    if (bitmap.countRange(first, last + 1) === last - first + 1) {
      // Every cluster is allocated (a guest rewriting its data): no lock, fill or bit to set.
      await this.image.writeAt(data, offset)
      if (options?.fua) await this.flush()
      return
    }

    const releases: (() => void)[] = []
    try {
      for (let cluster = first; cluster <= last; cluster++) {
        if (!bitmap.get(cluster)) releases.push(await this.lock(cluster))
      }
      // Re-read the bits under the locks: an earlier writer may have allocated a cluster.
      const fills: (() => Promise<void>)[] = []
      const headCluster = first
      const tailCluster = last
      const headFill = !bitmap.get(headCluster) && offset > headCluster * clusterSize
      const tailEnd = Math.min((tailCluster + 1) * clusterSize, this.size)
      const tailFill = !bitmap.get(tailCluster) && end < tailEnd
      if (first === last && headFill && tailFill) {
        // A write inside one unallocated cluster: one read of the cluster from below and one
        // write of the merged cluster, instead of two fills and the data (copy-on-write as
        // qcow2 does it).
        await this.fillAround(headCluster * clusterSize, tailEnd, data, offset)
      } else {
        if (headFill) {
          const fillStart = headCluster * clusterSize
          fills.push(() => this.fill(fillStart, offset))
        }
        if (tailFill) fills.push(() => this.fill(end, tailEnd))
        fills.push(() => this.image.writeAt(data, offset))
        await runLimited(fills, IO_PARALLELISM)
      }
      const wasFull = bitmap.isFull
      bitmap.setRange(first, last + 1)
      if (!wasFull && bitmap.isFull) this.markAllAllocated()
    } finally {
      for (const release of releases) release()
    }
    if (options?.fua) await this.flush()
  }

  /** Write [start, end) as what lies below with `data` laid over it at `offset`, in one write. */
  private async fillAround(
    start: number,
    end: number,
    data: Uint8Array,
    offset: number,
  ): Promise<void> {
    const buffer = this.takeFillBuffer(end - start)
    try {
      buffer.set(data, offset - start)
      const pieces = this.piecesBelow(buffer, start, [
        [start, offset],
        [offset + data.length, end],
      ])
      const job = pieces && this.image.readPiecesThenWriteAt(buffer, pieces, start)
      if (job) {
        await job
        return
      }
      await readBelow(this.backing, buffer, start)
      buffer.set(data, offset - start)
      await this.image.writeAt(buffer, start)
    } finally {
      this.giveFillBuffer(buffer)
    }
  }

  /**
   * The reads that fill `ranges` (guest offsets) of `buffer`, which holds the guest range from
   * `start`, from below, as [fd, position, bufferOffset, length] quadruples: from a raw base,
   * with zeros filled in now past its end or without a base. Null for any other base, which
   * is read through its own disk.
   */
  private piecesBelow(
    buffer: Uint8Array,
    start: number,
    ranges: [number, number][],
  ): number[] | null {
    const backing = this.backing
    if (backing && !(backing instanceof RawDisk)) return null
    const pieces: number[] = []
    for (const [from, to] of ranges) {
      const available = backing ? Math.max(0, Math.min(to, backing.size) - from) : 0
      if (available > 0) pieces.push(backing!.fd, from, from - start, available)
      if (from + available < to) buffer.fill(0, from + available - start, to - start)
    }
    return pieces
  }

  /** Copy [start, end) of the layers below into the image file (the partial-cluster fill). */
  private async fill(start: number, end: number): Promise<void> {
    if (end <= start) return
    const buffer = this.takeFillBuffer(end - start)
    try {
      await readBelow(this.backing, buffer, start)
      await this.image.writeAt(buffer, start)
    } finally {
      this.giveFillBuffer(buffer)
    }
  }

  /**
   * A buffer of `length` bytes for a copy-on-write fill. Fills are at most a cluster long, and
   * a guest writing new clusters fills one per write: reusing the buffers of finished fills
   * spares a fresh allocation (page faults, then garbage collection) each time, which was the
   * largest cost of a 4 KiB random write to new clusters.
   */
  private takeFillBuffer(length: number): Buffer {
    const spare = this.fillBuffers.pop() ?? Buffer.allocUnsafeSlow(this.clusterSize)
    return spare.subarray(0, length)
  }

  /** Give back a buffer of {@link takeFillBuffer} once nothing refers to it any more. */
  private giveFillBuffer(buffer: Buffer): void {
    if (this.fillBuffers.length < MAX_SPARE_FILL_BUFFERS)
      this.fillBuffers.push(Buffer.from(buffer.buffer, buffer.byteOffset, this.clusterSize))
  }

  /** Set ALL_ALLOCATED in memory; the next flush writes it after the bitmap. */
  private markAllAllocated(): void {
    this.header.compatibleFeatures |= FEATURE_ALL_ALLOCATED
    this.headerDirty = true
  }

  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.assertWritable()
    checkRange(this.path, this.size, offset, length)
    if (length === 0) return
    const clusterSize = this.clusterSize
    const end = offset + length
    // Whole clusters that are unallocated here and read as zeros below need no write at all;
    // everything else is written as zeroes, in runs of up to ZERO_CHUNK bytes.
    const belowIsZero = this.zeroBelow(offset, end)
    let runStart = offset
    let cursor = offset
    while (cursor < end) {
      const cluster = Math.floor(cursor / clusterSize)
      const clusterStart = cluster * clusterSize
      const clusterEnd = Math.min(clusterStart + clusterSize, this.size)
      const pieceEnd = Math.min(clusterEnd, end)
      const whole = cursor === clusterStart && pieceEnd === clusterEnd
      const skip =
        whole && !this.isAllocated(cluster) && (await belowIsZero(clusterStart, clusterEnd))
      if (skip || pieceEnd - runStart > ZERO_CHUNK) {
        if (cursor > runStart) await this.write(runStart, zeroes(cursor - runStart))
        runStart = skip ? pieceEnd : cursor
      }
      cursor = pieceEnd
    }
    if (cursor > runStart) await this.write(runStart, zeroes(cursor - runStart))
    if (options?.fua) await this.flush()
  }

  /**
   * A test of whether [start, finish) reads as zeros below this layer, for ascending ranges
   * inside [offset, end). The backing disk's block status is asked once for the whole range,
   * on the first range that lies inside it, not once per cluster.
   */
  private zeroBelow(
    offset: number,
    end: number,
  ): (start: number, finish: number) => Promise<boolean> {
    const backing = this.backing
    let extents: BlockExtent[] | null = null
    let index = 0
    return async (start, finish) => {
      if (!backing || start >= backing.size) return true
      if (!backing.capabilities.blockStatus) return false
      extents ??= await backing.blockStatus(offset, Math.min(end, backing.size) - offset)
      const stop = Math.min(finish, backing.size)
      while (index < extents.length && extents[index]!.offset + extents[index]!.length <= start)
        index++
      for (let i = index; i < extents.length && extents[i]!.offset < stop; i++) {
        if (!extents[i]!.zero) return false
      }
      return true
    }
  }

  async discard(offset: number, length: number): Promise<void> {
    this.assertOpen()
    checkRange(this.path, this.size, offset, length)
  }

  async flush(): Promise<void> {
    this.assertOpen()
    if (this.readOnly) return
    const run = this.flushing.then(() => this.flushNow())
    this.flushing = run.catch(() => undefined)
    await run
  }

  private async flushNow(): Promise<void> {
    const chunks = this.bitmap?.takeDirty() ?? []
    const headerDirty = this.headerDirty
    const features = this.header.compatibleFeatures
    this.headerDirty = false
    try {
      await this.image.datasync()
      if (chunks.length === 0 && !headerDirty) return
      for (const chunk of chunks) {
        await this.meta.writeAt(chunk.data, this.header.headerSize + chunk.offset)
      }
      if (headerDirty) {
        // Only the 8-byte field is written: `base` shifts the table's offset to the buffer's start.
        const spec = FIELDS.compatibleFeatures
        const field = Buffer.alloc(spec.length)
        spec.put(field, features, -spec.offset)
        await this.meta.writeAt(field, spec.offset)
      }
      await this.meta.datasync()
    } catch (error) {
      this.bitmap?.markDirty(chunks.map((chunk) => chunk.offset))
      if (headerDirty) this.headerDirty = true
      throw error
    }
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    this.assertOpen()
    checkRange(this.path, this.size, offset, length)
    if (length === 0) return []
    const bitmap = this.allAllocated ? null : this.bitmap
    if (!bitmap) return this.imageStatus(offset, offset + length)
    const clusterSize = this.clusterSize
    const end = offset + length
    const runs: [number, number, boolean][] = []
    bitmap.forEachRun(
      Math.floor(offset / clusterSize),
      Math.ceil(end / clusterSize),
      (first, stop, allocated) => {
        runs.push([
          Math.max(first * clusterSize, offset),
          Math.min(stop * clusterSize, end),
          allocated,
        ])
      },
    )
    return overlayStatus(this.backing, runs)
  }

  /**
   * Block status of [offset, end) when the image file is the whole guest view (ALL_ALLOCATED, or
   * no bitmap): its holes read as zeros and are reported so (present and zero), as for a raw
   * file and as `qemu-img map` reports them. A stream leaves the zeros it would copy as holes,
   * so a flattened overlay is mostly holes where its base was. Without SEEK_DATA, all data.
   */
  private async imageStatus(offset: number, end: number): Promise<BlockExtent[]> {
    const status = await fileStatus(this.image, offset, end)
    return status ?? [{ offset, length: end - offset, depth: 0, present: true, zero: false }]
  }

  async info(): Promise<ImageInfo> {
    const backingName = this.names.find(
      (name) => name.stored === this.header.backingName && this.header.backingName !== null,
    )
    const imageName = this.names[this.names.length - 1]
    const imageActual = this.imageHandle ? await this.imageHandle.allocatedBytes() : 0
    const info: ImageInfo = {
      filename: this.path,
      format: 'add-cow',
      'virtual-size': this.size,
      'actual-size': (await this.meta.allocatedBytes()) + imageActual,
      'cluster-size': this.clusterSize,
      'data-file': this.header.imageName,
      'full-data-file': imageName?.resolved ?? this.header.imageName,
      'data-file-format': this.header.imageFormat,
      'data-file-actual-size': imageActual,
      'allocated-clusters': this.allocatedClusters,
      'total-clusters': this.geometry.clusters,
      'all-allocated': this.allAllocated,
      'format-specific': {
        type: 'add-cow',
        data: {
          'header-size': this.header.headerSize,
          'cluster-bits': this.header.clusterBits,
          'compatible-features': `0x${this.header.compatibleFeatures.toString(16)}`,
          'metadata-file-length': this.metaLength,
          'metadata-actual-size': await this.meta.allocatedBytes(),
        },
      },
      names: this.names,
    }
    if (this.header.backingName !== null) {
      info['backing-filename'] = this.header.backingName
      info['full-backing-filename'] = backingName?.resolved ?? this.header.backingName
      info['backing-filename-format'] = this.header.backingFormat ?? ''
    }
    const warnings: string[] = []
    if (this.oddities.nonZeroPadding.length > 0) {
      warnings.push(
        `header padding holds non-zero bytes (first at offset ${this.oddities.nonZeroPadding[0]})`,
      )
    }
    for (const name of this.names) {
      if (!name.followed)
        warnings.push(`the name ${quote(name.stored)} would not be followed (${name.reason})`)
    }
    if (warnings.length > 0) info.warnings = warnings
    return info
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
    await this.imageHandle?.close().catch((error: unknown) => (failure ??= error))
    await this.meta.close().catch((error: unknown) => (failure ??= error))
    if (this.backing) await this.backing.close().catch((error: unknown) => (failure ??= error))
    if (failure) throw failure
  }
}

/** Length of a regular file by stat, without opening it (SIZE_LIMIT past 2^53 - 1). */
async function statLength(path: string): Promise<number> {
  const { size } = await stat(path, { bigint: true })
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new EngineError(
      'SIZE_LIMIT',
      `${path} is ${size} bytes long, more than this tool can address (2^53 - 1).`,
      {
        path,
        field: 'file length',
        value: size.toString(),
      },
    )
  }
  return Number(size)
}

/** The add-cow driver, current layout ("ACOW"). */
export const addCowDriver: FormatDriver = {
  ...ADD_COW_FORMAT,
  open: (path, options) => AddCowDisk.open(path, options),
  // Loaded on use: opening an image (info, serve) needs neither (start-up, issue 15).
  create: async (options) => (await import('./create')).createAddCow(options),
  check: async (path, context) => (await import('./check')).checkAddCow(path, context),
  async readLinks(path) {
    const header = await readHeaderFile(path)
    return {
      backing:
        header.backingName === null
          ? null
          : { name: header.backingName, format: header.backingFormat },
      dataFile: header.imageName,
    }
  },
  setBacking: setBackingLink,
  restoreState: restoreFeatures,
}
