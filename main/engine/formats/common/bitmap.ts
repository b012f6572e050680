/** Bytes of bitmap written back as one unit when any bit in them changes. */
export const BITMAP_CHUNK = 4096

const POPCOUNT = new Uint8Array(256)
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + (POPCOUNT[i >> 1] ?? 0)

/**
 * The in-memory copy of an add-cow allocation bitmap: cluster i is bit (i % 8), least
 * significant first, of byte floor(i / 8). Changes are tracked in {@link BITMAP_CHUNK}-byte
 * chunks so a flush writes back only what changed.
 */
export class ClusterBitmap {
  private readonly dirty = new Set<number>()
  private allocated: number

  /**
   * @param bytes the bitmap bytes (ceil(clusters / 8) of them); bits past the last cluster are
   *   cleared here, as the layout says they are ignored when read.
   */
  constructor(
    readonly bytes: Uint8Array,
    readonly clusters: number,
  ) {
    const tailBits = clusters % 8
    if (tailBits !== 0 && bytes.length > 0) {
      const last = bytes.length - 1
      bytes[last] = (bytes[last] ?? 0) & ((1 << tailBits) - 1)
    }
    let count = 0
    for (let i = 0; i < bytes.length; i++) count += POPCOUNT[bytes[i] ?? 0] ?? 0
    this.allocated = count
  }

  /** Number of set bits (allocated clusters). */
  get allocatedCount(): number {
    return this.allocated
  }

  get isFull(): boolean {
    return this.allocated === this.clusters
  }

  get(cluster: number): boolean {
    return (((this.bytes[cluster >>> 3] ?? 0) >>> (cluster & 7)) & 1) === 1
  }

  /** Set the bits of clusters [first, end) and mark their chunks dirty. */
  setRange(first: number, end: number): void {
    for (let cluster = first; cluster < end; cluster++) {
      const index = cluster >>> 3
      const mask = 1 << (cluster & 7)
      const byte = this.bytes[index] ?? 0
      if ((byte & mask) === 0) {
        this.bytes[index] = byte | mask
        this.allocated++
        this.dirty.add(Math.floor(index / BITMAP_CHUNK))
      }
    }
  }

  /** Clear the bits of clusters [first, end) and mark their chunks dirty. */
  clearRange(first: number, end: number): void {
    for (let cluster = first; cluster < end; cluster++) {
      const index = cluster >>> 3
      const mask = 1 << (cluster & 7)
      const byte = this.bytes[index] ?? 0
      if ((byte & mask) !== 0) {
        this.bytes[index] = byte & ~mask
        this.allocated--
        this.dirty.add(Math.floor(index / BITMAP_CHUNK))
      }
    }
  }

  /**
   * Runs of equal bits over clusters [first, end): calls `visit(start, stop, allocated)` for
   * each maximal run. Skips whole 0x00 / 0xff bytes, so a 16M-cluster map walks fast.
   */
  forEachRun(
    first: number,
    end: number,
    visit: (start: number, stop: number, allocated: boolean) => void,
  ): void {
    if (first >= end) return
    let runStart = first
    let runValue = this.get(first)
    let cluster = first + 1
    while (cluster < end) {
      if ((cluster & 7) === 0 && cluster + 8 <= end) {
        const byte = this.bytes[cluster >>> 3] ?? 0
        if ((runValue && byte === 0xff) || (!runValue && byte === 0)) {
          cluster += 8
          continue
        }
      }
      const value = this.get(cluster)
      if (value !== runValue) {
        visit(runStart, cluster, runValue)
        runStart = cluster
        runValue = value
      }
      cluster++
    }
    visit(runStart, end, runValue)
  }

  get hasDirty(): boolean {
    return this.dirty.size > 0
  }

  /**
   * Copy out every dirty chunk (byte offset within the bitmap and its bytes) and mark them
   * clean. Bits set after this call stay dirty for the next flush.
   */
  takeDirty(): { offset: number; data: Buffer }[] {
    const chunks = [...this.dirty].sort((a, b) => a - b)
    this.dirty.clear()
    return chunks.map((chunk) => {
      const offset = chunk * BITMAP_CHUNK
      const end = Math.min(offset + BITMAP_CHUNK, this.bytes.length)
      return { offset, data: Buffer.from(this.bytes.subarray(offset, end)) }
    })
  }

  /** Put chunks back in the dirty set (after a failed write-back). */
  markDirty(offsets: number[]): void {
    for (const offset of offsets) this.dirty.add(Math.floor(offset / BITMAP_CHUNK))
  }
}
