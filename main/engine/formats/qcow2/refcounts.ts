import { EngineError } from '../../errors'
import type { BlockFile } from '../../file'
import { FIELDS, MAX_REFCOUNT_TABLE_BYTES } from './header'
import { TableCache } from './table-cache'

const TWO_32 = 2 ** 32
/** Used clusters past the end of the file skipped by the allocator before it calls the image corrupt. */
const MAX_SKIPPED_CLUSTERS = 65536
/** Bytes of refcount blocks kept in memory when clean. */
const BLOCK_CACHE_BYTES = 16 * 1024 * 1024

function view(buffer: Uint8Array): DataView {
  return new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength)
}

/**
 * The refcount side of a writable qcow2 image: the refcount table, a bounded cache of refcount
 * blocks, cluster allocation at the end of the file, and frees deferred until the tables that
 * dropped the references are durable.
 *
 * Allocation only moves forward from the end of the file: a cluster freed during this session is
 * never reused, so data still referenced by a durable L2 table is never overwritten. Growing the
 * refcount table writes a new, larger table in fresh clusters, then switches the header to it,
 * then frees the old one (a crash in between leaks clusters, never corrupts).
 */
export class Refcounts {
  private readonly blocks: TableCache
  private readonly dirtyTableEntries = new Set<number>()
  private pendingFrees: { offset: number; length: number }[] = []
  /** Old refcount tables to free once the header points at the new one. */
  private replacedTables: { offset: number; length: number }[] = []
  private relocated = false
  private nextFree: number

  private constructor(
    private readonly file: BlockFile,
    private readonly path: string,
    private readonly clusterSize: number,
    private readonly refcountBits: number,
    private table: Buffer,
    private tableOffset: number,
    private tableClusters: number,
    /** The file's length when opened. */
    fileLength: number,
  ) {
    this.nextFree = Math.ceil(fileLength / clusterSize)
    const capacity = Math.max(4, Math.floor(BLOCK_CACHE_BYTES / clusterSize))
    this.blocks = new TableCache(capacity, (offset) => this.loadBlock(offset))
  }

  /** Read the refcount table of an image opened for writing. */
  static async load(
    file: BlockFile,
    path: string,
    clusterSize: number,
    refcountOrder: number,
    tableOffset: number,
    tableClusters: number,
    fileLength: number,
  ): Promise<Refcounts> {
    const bytes = tableClusters * clusterSize
    if (tableOffset + bytes > fileLength) {
      throw new EngineError(
        'CORRUPT_IMAGE',
        `The qcow2 refcount table of ${path} (offset ${tableOffset}, ${tableClusters} clusters) runs past the end of the ${fileLength}-byte file.`,
        { path, field: 'refcount_table_offset', value: tableOffset },
      )
    }
    const table = Buffer.alloc(bytes)
    await file.readAt(table, tableOffset)
    const refcounts = new Refcounts(
      file,
      path,
      clusterSize,
      2 ** refcountOrder,
      table,
      tableOffset,
      tableClusters,
      fileLength,
    )
    for (let index = 0; index < refcounts.tableEntries; index++) refcounts.blockOffset(index)
    return refcounts
  }

  /** Refcount entries per refcount block. */
  get blockEntries(): number {
    return (this.clusterSize * 8) / this.refcountBits
  }

  private get tableEntries(): number {
    return this.table.length / 8
  }

  /** The first byte past every cluster allocated so far. */
  get end(): number {
    return this.nextFree * this.clusterSize
  }

  /** Whether anything waits to be written back. */
  get dirty(): boolean {
    return (
      this.blocks.dirtyCount > 0 ||
      this.dirtyTableEntries.size > 0 ||
      this.relocated ||
      this.pendingFrees.length > 0
    )
  }

  /** Whether the block cache holds as many dirty blocks as it may. */
  get full(): boolean {
    return this.blocks.dirtyCount >= this.blocks.capacity
  }

  private blockOffset(index: number): number {
    const data = view(this.table)
    const high = data.getUint32(index * 8, false)
    const low = data.getUint32(index * 8 + 4, false)
    if (high >= 2 ** 21 || low % this.clusterSize !== 0) {
      throw new EngineError(
        'CORRUPT_IMAGE',
        `qcow2 refcount table entry ${index} of ${this.path} (0x${high.toString(16)}${low.toString(16).padStart(8, '0')}) is not a cluster-aligned offset.`,
        { path: this.path, field: 'refcount table entry', value: index },
      )
    }
    return high * TWO_32 + low
  }

  private setBlockOffset(index: number, offset: number): void {
    const data = view(this.table)
    data.setUint32(index * 8, Math.floor(offset / TWO_32), false)
    data.setUint32(index * 8 + 4, offset % TWO_32, false)
    this.dirtyTableEntries.add(index)
  }

  private async loadBlock(offset: number): Promise<Buffer> {
    const length = await this.file.length()
    if (offset + this.clusterSize > length) {
      throw new EngineError(
        'CORRUPT_IMAGE',
        `A qcow2 refcount block of ${this.path} at offset ${offset} lies past the end of the ${length}-byte file.`,
        { path: this.path, field: 'refcount block offset', value: offset },
      )
    }
    const block = Buffer.alloc(this.clusterSize)
    await this.file.readAt(block, offset)
    return block
  }

  private readEntry(block: Buffer, index: number): number {
    const bits = this.refcountBits
    if (bits < 8) {
      const perByte = 8 / bits
      return (
        ((block[Math.floor(index / perByte)] ?? 0) >> ((index % perByte) * bits)) &
        ((1 << bits) - 1)
      )
    }
    const data = view(block)
    if (bits === 8) return block[index] ?? 0
    if (bits === 16) return data.getUint16(index * 2, false)
    if (bits === 32) return data.getUint32(index * 4, false)
    return data.getUint32(index * 8, false) * TWO_32 + data.getUint32(index * 8 + 4, false)
  }

  private writeEntry(block: Buffer, index: number, value: number): void {
    const bits = this.refcountBits
    if (bits < 8) {
      const perByte = 8 / bits
      const byte = Math.floor(index / perByte)
      const shift = (index % perByte) * bits
      const mask = ((1 << bits) - 1) << shift
      block[byte] = ((block[byte] ?? 0) & ~mask) | (value << shift)
      return
    }
    const data = view(block)
    if (bits === 8) block[index] = value
    else if (bits === 16) data.setUint16(index * 2, value, false)
    else if (bits === 32) data.setUint32(index * 4, value, false)
    else {
      data.setUint32(index * 8, Math.floor(value / TWO_32), false)
      data.setUint32(index * 8 + 4, value % TWO_32, false)
    }
  }

  private get maxRefcount(): number {
    return this.refcountBits >= 53 ? Number.MAX_SAFE_INTEGER : 2 ** this.refcountBits - 1
  }

  /** The refcount of `cluster` (0 where no block covers it). */
  async get(cluster: number): Promise<number> {
    const tableIndex = Math.floor(cluster / this.blockEntries)
    if (tableIndex >= this.tableEntries) return 0
    const offset = this.blockOffset(tableIndex)
    if (offset === 0) return 0
    return this.readEntry(await this.blocks.get(offset), cluster % this.blockEntries)
  }

  private async adjust(cluster: number, delta: 1 | -1): Promise<void> {
    await this.ensureBlock(cluster)
    const offset = this.blockOffset(Math.floor(cluster / this.blockEntries))
    const block = await this.blocks.get(offset)
    const index = cluster % this.blockEntries
    const value = this.readEntry(block, index) + delta
    if (value < 0) {
      throw new EngineError(
        'CORRUPT_IMAGE',
        `The qcow2 refcount of cluster ${cluster} (offset ${cluster * this.clusterSize}) in ${this.path} would drop below zero; run qemu-img check -r all.`,
        { path: this.path, field: 'refcount', value: cluster * this.clusterSize },
      )
    }
    if (value > this.maxRefcount) {
      throw new EngineError(
        'NOT_CAPABLE',
        `The qcow2 refcount of cluster ${cluster} in ${this.path} would exceed its ${this.refcountBits}-bit limit.`,
        { path: this.path, field: 'refcount', value: cluster * this.clusterSize },
      )
    }
    this.writeEntry(block, index, value)
    this.blocks.markDirty(offset)
  }

  /** A cluster index at the end of the file whose refcount is 0, not yet counted. */
  private async reserve(): Promise<number> {
    for (let skipped = 0; ; skipped++) {
      const cluster = this.nextFree++
      if ((await this.get(cluster)) === 0) return cluster
      if (skipped >= MAX_SKIPPED_CLUSTERS) {
        throw new EngineError(
          'CORRUPT_IMAGE',
          `The qcow2 refcounts of ${this.path} mark more than ${MAX_SKIPPED_CLUSTERS} clusters past the end of the file as used (up to offset ${cluster * this.clusterSize}); run qemu-img check -r all.`,
          { path: this.path, field: 'refcount', value: cluster * this.clusterSize },
        )
      }
    }
  }

  /** Make sure a refcount block covers `cluster`, allocating it (and a bigger table) as needed. */
  private async ensureBlock(cluster: number): Promise<void> {
    const tableIndex = Math.floor(cluster / this.blockEntries)
    if (tableIndex >= this.tableEntries) await this.growTable(tableIndex + 1)
    if (this.blockOffset(tableIndex) !== 0) return
    const blockCluster = await this.reserve()
    this.setBlockOffset(tableIndex, blockCluster * this.clusterSize)
    this.blocks.add(blockCluster * this.clusterSize, Buffer.alloc(this.clusterSize))
    await this.adjust(blockCluster, 1)
  }

  /** Replace the refcount table by a larger one in fresh clusters at the end of the file. */
  private async growTable(minEntries: number): Promise<void> {
    const entriesPerCluster = this.clusterSize / 8
    // Room for the entries asked for, for the blocks covering the new table itself, and headroom.
    let clusters = Math.ceil((minEntries * 2) / entriesPerCluster)
    for (;;) {
      const coveredEnd = this.nextFree + clusters + 4
      const needed = Math.ceil(coveredEnd / this.blockEntries) + 1
      if (needed <= clusters * entriesPerCluster && minEntries <= clusters * entriesPerCluster)
        break
      clusters = Math.ceil(Math.max(needed, minEntries) / entriesPerCluster) + 1
    }
    if (clusters * this.clusterSize > MAX_REFCOUNT_TABLE_BYTES) {
      throw new EngineError(
        'SIZE_LIMIT',
        `${this.path} would need a qcow2 refcount table of ${clusters} clusters, more than the ${MAX_REFCOUNT_TABLE_BYTES}-byte limit.`,
        { path: this.path, field: 'refcount_table_clusters', value: clusters },
      )
    }
    // Contiguous free clusters at the end.
    let start = this.nextFree
    for (let cluster = start; cluster < start + clusters; cluster++) {
      if ((await this.get(cluster)) !== 0) start = cluster + 1
    }
    this.nextFree = start + clusters
    const table = Buffer.alloc(clusters * this.clusterSize)
    this.table.copy(table)
    this.replacedTables.push({
      offset: this.tableOffset,
      length: this.tableClusters * this.clusterSize,
    })
    this.table = table
    this.tableOffset = start * this.clusterSize
    this.tableClusters = clusters
    this.relocated = true
    for (let cluster = start; cluster < start + clusters; cluster++) await this.adjust(cluster, 1)
  }

  /** Allocate one cluster (refcount 1) at the end of the file; returns its offset. */
  async allocate(): Promise<number> {
    const cluster = await this.reserve()
    await this.adjust(cluster, 1)
    return cluster * this.clusterSize
  }

  /** Drop one reference to every cluster overlapping [offset, offset + length), at the next write-back. */
  free(offset: number, length: number): void {
    this.pendingFrees.push({ offset, length })
  }

  /**
   * Write back allocations: dirty refcount blocks, sync, then the table entries (or the whole
   * new table and the header fields pointing at it), sync. Call before writing the L2 and L1
   * tables that reference the new clusters. Also syncs guest data written so far.
   */
  async writeAllocations(): Promise<void> {
    await this.writeBlocks()
    await this.file.datasync()
    if (this.relocated) {
      await this.file.writeAt(this.table, this.tableOffset)
      await this.file.datasync()
      const fields = Buffer.alloc(12)
      FIELDS.refcountTableOffset.put(
        fields,
        BigInt(this.tableOffset),
        -FIELDS.refcountTableOffset.offset,
      )
      FIELDS.refcountTableClusters.put(
        fields,
        this.tableClusters,
        -FIELDS.refcountTableOffset.offset,
      )
      await this.file.writeAt(fields, FIELDS.refcountTableOffset.offset)
      await this.file.datasync()
      this.relocated = false
      this.dirtyTableEntries.clear()
      for (const old of this.replacedTables) this.free(old.offset, old.length)
      this.replacedTables = []
    } else if (this.dirtyTableEntries.size > 0) {
      for (const index of [...this.dirtyTableEntries].sort((a, b) => a - b)) {
        await this.file.writeAt(
          this.table.subarray(index * 8, index * 8 + 8),
          this.tableOffset + index * 8,
        )
      }
      this.dirtyTableEntries.clear()
      await this.file.datasync()
    }
  }

  /**
   * Apply the deferred frees and write them back. Call only once the tables that no longer
   * reference those clusters are durable.
   */
  async writeFrees(): Promise<void> {
    if (this.pendingFrees.length === 0) return
    const frees = this.pendingFrees
    this.pendingFrees = []
    for (const { offset, length } of frees) {
      const first = Math.floor(offset / this.clusterSize)
      const last = Math.floor((offset + length - 1) / this.clusterSize)
      for (let cluster = first; cluster <= last; cluster++) await this.adjust(cluster, -1)
    }
    await this.writeAllocations()
  }

  private async writeBlocks(): Promise<void> {
    const dirty = this.blocks.dirtyEntries()
    for (const { offset, data } of dirty) await this.file.writeAt(data, offset)
    this.blocks.markClean(dirty.map((entry) => entry.offset))
  }
}
