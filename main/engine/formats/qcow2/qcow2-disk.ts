import { measureQcow2, writeQcow2Image } from './write-image'
import type { ImageInfo, NameResolution } from '../../../../shared/image-types'
import type {
  BackingLink,
  BlockExtent,
  Disk,
  DiskCapabilities,
  FormatDriver,
  OpenOptions,
  WriteOptions,
} from '../../disk'
import { EngineError, quote } from '../../errors'
import {
  checkRange,
  pushExtent,
  pushStatusBelow,
  readBelow,
  runLimited,
  serialQueue,
} from '../../extents'
import { BlockFile, zeroes } from '../../file'
import { judgeName, withoutRealPath } from '../../names'
import { unrecordedBackingFormat } from '../common/unrecorded-format'
import {
  ALL_SUBCLUSTERS,
  readL1Entry,
  readL2Entry,
  SUBCLUSTERS,
  tableGeometry,
  writeL1Entry,
  writeL2Entry,
  type ClusterMapping,
  type TableGeometry,
} from './entries'
import {
  COMPATIBLE_LAZY_REFCOUNTS,
  EXTENSION_BITMAPS,
  parseQcow2Header,
  type Qcow2Header,
} from './header'
import { QCOW2_FORMAT } from './format'
import { Refcounts } from './refcounts'
import { TableCache } from './table-cache'

/** Bytes of L2 tables kept in memory when clean. */
const L2_CACHE_BYTES = 32 * 1024 * 1024
/** Largest first read (the header cluster); clusters are at most 2 MiB. */
const HEAD_BYTES = 2 * 1024 * 1024
/** Decompressed clusters kept for reads that walk one compressed cluster in pieces. */
const DECOMPRESSED_CACHE = 4
/** Pieces of one read that may be in flight at once. */
const IO_PARALLELISM = 8

/** One run of the guest view with a single source, as {@link Qcow2Disk} walks its tables. */
type Run = { start: number; end: number } & (
  | { kind: 'below' }
  | { kind: 'zero' }
  | { kind: 'data'; host: number }
  | { kind: 'compressed'; cluster: number; host: number; length: number }
)

/**
 * A qcow2 image (QEMU's docs/interop/qcow2.txt), versions 2 and 3, as a chain member.
 *
 * Reads follow the active L1/L2 tables: standard, zero and compressed clusters (deflate or
 * zstd), extended L2 entries with 32 subclusters, and the image's own backing file (opened
 * through the chain's name policy). L2 tables are cached in a bounded LRU.
 *
 * Writes (for commit into a qcow2 base) allocate clusters at the end of the file. A write into
 * a cluster that is unallocated, zero, compressed or shared (refcount above one) copies the
 * cluster's guest view into a new cluster first; extended L2 entries allocate per subcluster.
 * Metadata is written back on flush in the order that keeps the image consistent across a
 * crash: guest data and refcount increments, then L2 tables, then L1 entries, then the frees
 * of clusters no longer referenced. A crash can leak clusters (`qemu-img check -r leaks`), never
 * expose unwritten data or reference a free cluster. All writes and flushes are serialised.
 */
export class Qcow2Disk implements Disk {
  readonly format = 'qcow2'
  readonly capabilities: DiskCapabilities
  private readonly l2Cache: TableCache
  private readonly dirtyL1 = new Set<number>()
  private readonly decompressed = new Map<string, Buffer>()
  /** Run `task` after every earlier write and flush (writes change shared metadata). */
  private readonly serialise = serialQueue()
  private closed = false

  private constructor(
    readonly path: string,
    private readonly file: BlockFile,
    readonly header: Qcow2Header,
    private readonly geometry: TableGeometry,
    private readonly l1: Buffer,
    readonly backing: Disk | null,
    private readonly names: NameResolution[],
    private readonly warnings: string[],
    private readonly fileLength: number,
    private readonly refcounts: Refcounts | null,
  ) {
    this.capabilities = {
      write: refcounts !== null,
      fastZero: refcounts !== null && header.version === 3,
      discard: false,
      blockStatus: true,
      multiConn: false,
    }
    this.l2Cache = new TableCache(
      Math.max(4, Math.floor(L2_CACHE_BYTES / header.clusterSize)),
      (offset) => this.loadTable(offset),
    )
  }

  /** Open a qcow2 file (see {@link qcow2Driver}). */
  static async open(path: string, options: OpenOptions): Promise<Qcow2Disk> {
    const file = await BlockFile.open(path, !options.readOnly)
    let backing: Disk | null = null
    try {
      const fileLength = await file.length()
      const head = Buffer.alloc(Math.min(fileLength, HEAD_BYTES))
      await file.readAt(head, 0)
      const header = parseQcow2Header(head, path, fileLength)
      if (!options.readOnly) assertWritable(path, header)
      const geometry = tableGeometry(path, header.clusterBits, header.extendedL2, header.version)
      const l1 = Buffer.alloc(header.l1Size * 8)
      await file.readAt(l1, header.l1TableOffset)

      const warnings: string[] = []
      const names: NameResolution[] = []
      if (header.dirty)
        warnings.push(
          'the dirty bit is set: refcounts may be inconsistent (qemu-img check -r all repairs them)',
        )
      if (header.corrupt)
        warnings.push('the corrupt bit is set: QEMU found an inconsistency; the image is read-only')
      if (header.backingName !== null) {
        const name = header.backingName
        const format =
          header.backingFormat ??
          (await unrecordedBackingFormat(
            path,
            name,
            options,
            warnings,
            `Record it with: qemu-img rebase -u -b ${quote(name)} -F FORMAT '${path}'.`,
          ))
        if (header.backingFormat === null && format !== null) {
          warnings.push(`the backing format is not recorded; ${quote(name)} is opened as ${format}`)
        }
        const verdict = await judgeName(path, name, format, options.policy)
        names.push(withoutRealPath(verdict))
        if (format !== null) backing = await options.openBacking(path, name, format)
        if (!verdict.followed)
          warnings.push(`the name ${quote(name)} would not be followed (${verdict.reason})`)
      }
      const refcounts = options.readOnly
        ? null
        : await Refcounts.load(
            file,
            path,
            header.clusterSize,
            header.refcountOrder,
            header.refcountTableOffset,
            header.refcountTableClusters,
            fileLength,
          )
      return new Qcow2Disk(
        path,
        file,
        header,
        geometry,
        l1,
        backing,
        names,
        warnings,
        fileLength,
        refcounts,
      )
    } catch (error) {
      await backing?.close().catch(() => undefined)
      await file.close().catch(() => undefined)
      throw error
    }
  }

  get readOnly(): boolean {
    return this.refcounts === null
  }

  get allocationUnit(): number {
    return this.header.extendedL2 ? this.header.clusterSize / SUBCLUSTERS : this.header.clusterSize
  }

  get size(): number {
    return this.header.size
  }

  get clusterSize(): number {
    return this.header.clusterSize
  }

  /** The first byte past what the file holds or what has been allocated in it. */
  private get fileLimit(): number {
    return Math.max(this.fileLength, this.refcounts?.end ?? 0)
  }

  private async loadTable(offset: number): Promise<Buffer> {
    const table = Buffer.alloc(this.header.clusterSize)
    await this.file.readAt(table, offset)
    return table
  }

  private assertOpen(): void {
    if (this.closed)
      throw new EngineError('BAD_REQUEST', `${this.path} is closed.`, { path: this.path })
  }

  /** The mapping of guest cluster `cluster` (unallocated past the L1 table). */
  private async mapping(cluster: number): Promise<ClusterMapping> {
    const l1Index = Math.floor(cluster / this.geometry.l2Entries)
    if (l1Index >= this.header.l1Size) return { kind: 'unallocated' }
    const { offset } = readL1Entry(this.l1, l1Index, this.geometry, this.fileLimit)
    if (offset === 0) return { kind: 'unallocated' }
    const table = await this.l2Cache.get(offset)
    return readL2Entry(
      table,
      cluster % this.geometry.l2Entries,
      this.geometry,
      this.fileLimit,
      cluster,
    )
  }

  /**
   * Walk the guest range [offset, end) and call `visit` with maximal runs of one source.
   * Whole L2 ranges without a table are one run.
   */
  private async walk(offset: number, end: number, visit: (run: Run) => void): Promise<void> {
    const { clusterSize, l2Entries } = this.geometry
    let pending: Run | null = null
    const emit = (run: Run): void => {
      if (run.end <= run.start) return
      if (pending && pending.end === run.start && pending.kind === run.kind) {
        if (run.kind === 'below' || run.kind === 'zero') {
          pending.end = run.end
          return
        }
        if (
          run.kind === 'data' &&
          pending.kind === 'data' &&
          pending.host + (pending.end - pending.start) === run.host
        ) {
          pending.end = run.end
          return
        }
      }
      if (pending) visit(pending)
      pending = { ...run }
    }
    let cursor = offset
    while (cursor < end) {
      const cluster = Math.floor(cursor / clusterSize)
      const l1Index = Math.floor(cluster / l2Entries)
      const l1Entry =
        l1Index < this.header.l1Size
          ? readL1Entry(this.l1, l1Index, this.geometry, this.fileLimit)
          : null
      if (!l1Entry || l1Entry.offset === 0) {
        const stop = Math.min(end, (l1Index + 1) * l2Entries * clusterSize)
        emit({ kind: 'below', start: cursor, end: stop })
        cursor = stop
        continue
      }
      const clusterStart = cluster * clusterSize
      const stop = Math.min(end, clusterStart + clusterSize)
      const mapping = await this.mapping(cluster)
      switch (mapping.kind) {
        case 'unallocated':
          emit({ kind: 'below', start: cursor, end: stop })
          break
        case 'zero':
          emit({ kind: 'zero', start: cursor, end: stop })
          break
        case 'data':
          emit({
            kind: 'data',
            start: cursor,
            end: stop,
            host: mapping.host + (cursor - clusterStart),
          })
          break
        case 'compressed':
          emit({
            kind: 'compressed',
            start: cursor,
            end: stop,
            cluster,
            host: mapping.host,
            length: mapping.length,
          })
          break
        case 'subclusters': {
          const subSize = clusterSize / SUBCLUSTERS
          for (let at = cursor; at < stop;) {
            const sub = Math.floor((at - clusterStart) / subSize)
            const subEnd = Math.min(stop, clusterStart + (sub + 1) * subSize)
            const bit = 2 ** sub
            if (Math.floor(mapping.alloc / bit) % 2 === 1) {
              emit({
                kind: 'data',
                start: at,
                end: subEnd,
                host: mapping.host + (at - clusterStart),
              })
            } else if (Math.floor(mapping.zero / bit) % 2 === 1) {
              emit({ kind: 'zero', start: at, end: subEnd })
            } else {
              emit({ kind: 'below', start: at, end: subEnd })
            }
            at = subEnd
          }
          break
        }
      }
      cursor = stop
    }
    if (pending) visit(pending)
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buffer = Buffer.allocUnsafe(length)
    await this.readInto(buffer, offset)
    return buffer
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    this.assertOpen()
    checkRange(this.path, this.size, offset, target.length)
    await this.readLayer(target, offset)
  }

  /** Read this layer's guest view (no range check; callers stay inside the disk). */
  private async readLayer(target: Uint8Array, offset: number): Promise<void> {
    if (target.length === 0) return
    const tasks: (() => Promise<void>)[] = []
    await this.walk(offset, offset + target.length, (run) => {
      const piece = target.subarray(run.start - offset, run.end - offset)
      switch (run.kind) {
        case 'below':
          tasks.push(() => readBelow(this.backing, piece, run.start))
          break
        case 'zero':
          piece.fill(0)
          break
        case 'data':
          tasks.push(() => this.file.readAt(piece, run.host))
          break
        case 'compressed':
          tasks.push(async () => {
            const cluster = await this.decompress(run.cluster, run.host, run.length)
            const within = run.start - run.cluster * this.clusterSize
            piece.set(cluster.subarray(within, within + piece.length))
          })
          break
      }
    })
    await runLimited(tasks, IO_PARALLELISM)
  }

  private async decompress(cluster: number, host: number, length: number): Promise<Buffer> {
    const key = `${host}:${length}`
    const cached = this.decompressed.get(key)
    if (cached) return cached
    const input = Buffer.alloc(length)
    await this.file.readAt(input, host)
    const output = Buffer.alloc(this.clusterSize)
    // Loaded on the first compressed cluster: zlib and the zstd decoder cost every start-up of
    // the CLI otherwise, and most images have no compressed cluster.
    const { decompressCluster } = await import('./compression')
    decompressCluster(
      this.header.compressionType,
      input,
      output,
      this.path,
      cluster * this.clusterSize,
    )
    this.decompressed.set(key, output)
    if (this.decompressed.size > DECOMPRESSED_CACHE) {
      const oldest = this.decompressed.keys().next().value
      if (oldest !== undefined) this.decompressed.delete(oldest)
    }
    return output
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    this.assertOpen()
    checkRange(this.path, this.size, offset, length)
    const extents: BlockExtent[] = []
    if (length === 0) return extents
    const runs: Run[] = []
    await this.walk(offset, offset + length, (run) => runs.push(run))
    for (const run of runs) {
      const extentLength = run.end - run.start
      if (run.kind === 'below') {
        await pushStatusBelow(extents, this.backing, run.start, run.end)
      } else {
        pushExtent(extents, {
          offset: run.start,
          length: extentLength,
          depth: 0,
          present: true,
          zero: run.kind === 'zero',
        })
      }
    }
    return extents
  }

  // ---- writing -------------------------------------------------------------------------------

  private assertWritableNow(): Refcounts {
    this.assertOpen()
    if (!this.refcounts)
      throw new EngineError('READ_ONLY', `${this.path} is open read-only.`, { path: this.path })
    return this.refcounts
  }

  async write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    this.assertWritableNow()
    checkRange(this.path, this.size, offset, data.length)
    if (data.length === 0) return
    await this.serialise(async () => {
      const clusterSize = this.clusterSize
      for (let cursor = offset; cursor < offset + data.length;) {
        const cluster = Math.floor(cursor / clusterSize)
        const stop = Math.min(offset + data.length, (cluster + 1) * clusterSize)
        await this.writeCluster(
          cluster,
          cursor - cluster * clusterSize,
          data.subarray(cursor - offset, stop - offset),
        )
        cursor = stop
      }
      await this.flushIfFull()
    })
    if (options?.fua) await this.flush()
  }

  /** The L2 table for `cluster`, made writable: allocated when missing, copied when shared. */
  private async writableTable(
    cluster: number,
  ): Promise<{ table: Buffer; tableOffset: number; index: number }> {
    const refcounts = this.assertWritableNow()
    const l1Index = Math.floor(cluster / this.geometry.l2Entries)
    const index = cluster % this.geometry.l2Entries
    const entry = readL1Entry(this.l1, l1Index, this.geometry, this.fileLimit)
    if (entry.offset !== 0 && entry.copied) {
      const table = await this.l2Cache.get(entry.offset)
      // Dirty from now on, so that it stays cached until written back.
      this.l2Cache.markDirty(entry.offset)
      return { table, tableOffset: entry.offset, index }
    }
    const table =
      entry.offset === 0
        ? Buffer.alloc(this.clusterSize)
        : Buffer.from(await this.l2Cache.get(entry.offset))
    const tableOffset = await refcounts.allocate()
    this.l2Cache.add(tableOffset, table)
    writeL1Entry(this.l1, l1Index, tableOffset)
    this.dirtyL1.add(l1Index)
    if (entry.offset !== 0) refcounts.free(entry.offset, this.clusterSize)
    return { table, tableOffset, index }
  }

  /** Drop the reference a mapping holds on its host clusters (at the next write-back). */
  private release(mapping: ClusterMapping, keptHost: number): void {
    const refcounts = this.assertWritableNow()
    if (mapping.kind === 'compressed') {
      refcounts.free(mapping.host, mapping.length)
    } else if (mapping.kind !== 'unallocated' && mapping.host !== 0 && mapping.host !== keptHost) {
      refcounts.free(mapping.host, this.clusterSize)
    }
  }

  /** The guest view of [start, end) of this layer, clamped to the virtual size (zeros past it). */
  private async guestView(start: number, end: number): Promise<Buffer> {
    const buffer = Buffer.alloc(end - start)
    const inside = Math.min(end, this.size)
    if (inside > start) await this.readLayer(buffer.subarray(0, inside - start), start)
    return buffer
  }

  private async writeCluster(cluster: number, within: number, piece: Uint8Array): Promise<void> {
    const refcounts = this.assertWritableNow()
    const clusterSize = this.clusterSize
    const clusterStart = cluster * clusterSize
    const current = await this.mapping(cluster)
    if (current.kind === 'data' && current.copied) {
      await this.file.writeAt(piece, current.host + within)
      return
    }
    const { table, tableOffset, index } = await this.writableTable(cluster)
    const mapping = readL2Entry(table, index, this.geometry, this.fileLimit, cluster)
    if (mapping.kind === 'data' && mapping.copied) {
      await this.file.writeAt(piece, mapping.host + within)
      return
    }
    const hasHost =
      mapping.kind !== 'unallocated' && mapping.kind !== 'compressed' && mapping.host !== 0
    const shared = hasHost && !mapping.copied
    if (this.geometry.extendedL2 && mapping.kind !== 'compressed' && !shared) {
      // Allocate per subcluster: only the touched subclusters change.
      const subSize = clusterSize / SUBCLUSTERS
      const first = Math.floor(within / subSize)
      const last = Math.floor((within + piece.length - 1) / subSize)
      const spanStart = first * subSize
      const span = await this.guestView(
        clusterStart + spanStart,
        clusterStart + (last + 1) * subSize,
      )
      span.set(piece, within - spanStart)
      const host = hasHost ? mapping.host : await refcounts.allocate()
      await this.file.writeAt(span, host + spanStart)
      let touched = 0
      for (let sub = first; sub <= last; sub++) touched += 2 ** sub
      const alloc =
        mapping.kind === 'unallocated'
          ? 0
          : mapping.kind === 'zero'
            ? 0
            : mapping.kind === 'data'
              ? ALL_SUBCLUSTERS
              : mapping.alloc
      const zero =
        mapping.kind === 'zero'
          ? ALL_SUBCLUSTERS
          : mapping.kind === 'subclusters'
            ? mapping.zero
            : 0
      writeL2Entry(table, index, this.geometry, {
        host,
        copied: true,
        alloc: (alloc | touched) >>> 0,
        zeroMask: (zero & ~touched) >>> 0,
      })
      this.l2Cache.markDirty(tableOffset)
      return
    }
    // Copy the whole cluster: its current guest view with the new data over it.
    const buffer =
      piece.length === clusterSize
        ? Buffer.from(piece)
        : await this.guestView(clusterStart, clusterStart + clusterSize)
    if (piece.length !== clusterSize) buffer.set(piece, within)
    const host =
      hasHost && !shared && mapping.kind === 'zero' ? mapping.host : await refcounts.allocate()
    await this.file.writeAt(buffer, host)
    writeL2Entry(table, index, this.geometry, {
      host,
      copied: true,
      alloc: ALL_SUBCLUSTERS,
      zeroMask: 0,
    })
    this.l2Cache.markDirty(tableOffset)
    this.release(mapping, host)
  }

  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.assertWritableNow()
    checkRange(this.path, this.size, offset, length)
    if (length === 0) return
    await this.serialise(async () => {
      const clusterSize = this.clusterSize
      for (let cursor = offset; cursor < offset + length;) {
        const cluster = Math.floor(cursor / clusterSize)
        const clusterStart = cluster * clusterSize
        const stop = Math.min(offset + length, clusterStart + clusterSize)
        const whole =
          cursor === clusterStart && (stop === clusterStart + clusterSize || stop === this.size)
        if (whole && (await this.zeroCluster(cluster))) {
          cursor = stop
          continue
        }
        for (let at = cursor; at < stop; at += 1024 * 1024) {
          const chunk = Math.min(1024 * 1024, stop - at)
          await this.writeCluster(cluster, at - clusterStart, zeroes(chunk))
        }
        cursor = stop
      }
      await this.flushIfFull()
    })
    if (options?.fua) await this.flush()
  }

  /** Make a whole cluster read as zeros without writing data; false where the format cannot. */
  private async zeroCluster(cluster: number): Promise<boolean> {
    const current = await this.mapping(cluster)
    if (current.kind === 'unallocated' && !this.backing) return true
    if (current.kind === 'zero') return true
    if (this.header.version !== 3) return false
    const { table, tableOffset, index } = await this.writableTable(cluster)
    const mapping = readL2Entry(table, index, this.geometry, this.fileLimit, cluster)
    const keep =
      mapping.kind !== 'unallocated' && mapping.kind !== 'compressed' && mapping.copied
        ? mapping.host
        : 0
    writeL2Entry(table, index, this.geometry, {
      host: keep,
      copied: keep !== 0,
      zero: true,
      alloc: 0,
      zeroMask: ALL_SUBCLUSTERS,
    })
    this.l2Cache.markDirty(tableOffset)
    this.release(mapping, keep)
    return true
  }

  async discard(offset: number, length: number): Promise<void> {
    this.assertOpen()
    checkRange(this.path, this.size, offset, length)
  }

  async flush(): Promise<void> {
    this.assertOpen()
    if (!this.refcounts) return
    await this.serialise(() => this.writeBack())
  }

  private async flushIfFull(): Promise<void> {
    if (this.l2Cache.dirtyCount >= this.l2Cache.capacity || this.refcounts?.full)
      await this.writeBack()
  }

  /**
   * Write back everything in order: data and refcount increments (synced), L2 tables (synced),
   * L1 entries (synced), then frees of clusters nothing references any more (synced).
   */
  private async writeBack(): Promise<void> {
    const refcounts = this.refcounts
    if (!refcounts) return
    await refcounts.writeAllocations()
    const tables = this.l2Cache.dirtyEntries()
    if (tables.length > 0) {
      for (const { offset, data } of tables) await this.file.writeAt(data, offset)
      await this.file.datasync()
      this.l2Cache.markClean(tables.map((table) => table.offset))
    }
    if (this.dirtyL1.size > 0) {
      const indexes = [...this.dirtyL1].sort((a, b) => a - b)
      this.dirtyL1.clear()
      for (const index of indexes) {
        await this.file.writeAt(
          this.l1.subarray(index * 8, index * 8 + 8),
          this.header.l1TableOffset + index * 8,
        )
      }
      await this.file.datasync()
    }
    await refcounts.writeFrees()
  }

  async info(): Promise<ImageInfo> {
    const header = this.header
    const info: ImageInfo = {
      filename: this.path,
      format: 'qcow2',
      'virtual-size': this.size,
      'actual-size': await this.file.allocatedBytes(),
      'cluster-size': header.clusterSize,
      'format-specific': {
        type: 'qcow2',
        data: {
          compat: header.version === 2 ? '0.10' : '1.1',
          'compression-type': header.compressionType === 'zstd' ? 'zstd' : 'zlib',
          'lazy-refcounts': (header.compatibleFeatures & COMPATIBLE_LAZY_REFCOUNTS) !== 0n,
          'refcount-bits': 2 ** header.refcountOrder,
          corrupt: header.corrupt,
          'extended-l2': header.extendedL2,
          snapshots: header.nbSnapshots,
        },
      },
      names: this.names,
    }
    if (header.backingName !== null) {
      info['backing-filename'] = header.backingName
      info['full-backing-filename'] = this.names[0]?.resolved ?? header.backingName
      if (header.backingFormat !== null) info['backing-filename-format'] = header.backingFormat
      else if (this.backing) info['backing-filename-format'] = this.backing.format
    }
    if (this.warnings.length > 0) info.warnings = [...this.warnings]
    return info
  }

  /** The backing file as stored, with the format recorded (or the one the open decided). */
  backingLink(): BackingLink | null {
    if (this.header.backingName === null) return null
    return {
      name: this.header.backingName,
      format: this.header.backingFormat ?? this.backing?.format ?? null,
    }
  }

  async close(): Promise<void> {
    if (this.closed) return
    let failure: unknown = null
    try {
      if (this.refcounts) await this.flush()
    } catch (error) {
      failure = error
    }
    this.closed = true
    await this.file.close().catch((error: unknown) => (failure ??= error))
    if (this.backing) await this.backing.close().catch((error: unknown) => (failure ??= error))
    if (failure) throw failure
  }
}

/** Refuse, before any write, images this driver cannot keep consistent. */
function assertWritable(path: string, header: Qcow2Header): void {
  const refuse = (field: string, value: unknown, reason: string): EngineError =>
    new EngineError('NOT_CAPABLE', `Cannot write to ${path}: ${reason}.`, { path, field, value })
  if (header.dirty) {
    throw refuse(
      'incompatible_features',
      'dirty',
      'its dirty bit is set, so its refcounts may be wrong; run qemu-img check -r all first',
    )
  }
  if (header.corrupt) {
    throw refuse(
      'incompatible_features',
      'corrupt',
      'QEMU marked it corrupt; run qemu-img check -r all first',
    )
  }
  if (
    header.autoclearFeatures !== 0n ||
    header.extensions.some((extension) => extension.type === EXTENSION_BITMAPS)
  ) {
    throw refuse(
      'autoclear_features',
      `0x${header.autoclearFeatures.toString(16)}`,
      'it holds persistent dirty bitmaps, which writing would invalidate; remove them with qemu-img bitmap --remove first',
    )
  }
}

/** The qcow2 driver (versions 2 and 3). */
export const qcow2Driver: FormatDriver = {
  ...QCOW2_FORMAT,
  open: (path, options) => Qcow2Disk.open(path, options),
  convertInto: writeQcow2Image,
  measure: measureQcow2,
}
