/** Bytes of bitmap written back as one unit when any bit in them changes. */
export const BITMAP_CHUNK = 4096

const POPCOUNT = new Uint8Array(256)
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + (POPCOUNT[i >> 1] ?? 0)

/** Set bits in a 32-bit word. */
function popcount32(word: number): number {
  let value = word - ((word >>> 1) & 0x55555555)
  value = (value & 0x33333333) + ((value >>> 2) & 0x33333333)
  return Math.imul((value + (value >>> 4)) & 0x0f0f0f0f, 0x01010101) >>> 24
}

/**
 * The levels of the allocation summary, as log2 of the clusters one count covers: 2^9 (64
 * bitmap bytes), 2^15 and 2^21 (128 GiB of 64 KiB clusters). Each level is 64 times coarser
 * than the one below, so any range is counted in at most about 64 steps per level.
 */
export const SUMMARY_SHIFTS = [9, 15, 21] as const
const SUMMARY_SIZES: readonly number[] = SUMMARY_SHIFTS.map((shift) => 2 ** shift)

/**
 * The in-memory copy of an add-cow allocation bitmap: cluster i is bit (i % 8), least
 * significant first, of byte floor(i / 8). Changes are tracked in {@link BITMAP_CHUNK}-byte
 * chunks so a flush writes back only what changed.
 */
export class ClusterBitmap {
  private readonly dirty = new Set<number>()
  private allocated: number
  /**
   * The multi-resolution summary: `summary[l][b]` is the number of set bits among clusters
   * [b << SUMMARY_SHIFTS[l], (b + 1) << SUMMARY_SHIFTS[l]). Built once with the bitmap (1/32 of
   * its size in all) and kept current by every bit change, so counting the clusters of any
   * range, or finding the next set or clear bit, costs a few hundred steps on any disk size.
   */
  private readonly summary: (Uint16Array | Uint32Array)[]

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
    this.summary = SUMMARY_SHIFTS.map((shift) => {
      const blocks = Math.ceil(clusters / 2 ** shift)
      // Level 0 counts at most 512, level 1 at most 32768: both fit 16 bits.
      return shift <= 16 ? new Uint16Array(blocks) : new Uint32Array(blocks)
    })
    const level0 = this.summary[0]!
    let count = 0
    // A 32-bit word at a time where the bytes allow the view (16 words per level-0 block),
    // zero words skipped: loading a 2 MiB bitmap is a short loop, even before the JIT warms up.
    const aligned = bytes.byteOffset % 4 === 0
    const words = aligned
      ? new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2)
      : null
    let index = 0
    if (words) {
      for (let word = 0; word < words.length; word++) {
        const value = words[word]!
        if (value === 0) continue
        const bits = popcount32(value)
        count += bits
        level0[word >>> 4] = level0[word >>> 4]! + bits
      }
      index = words.length * 4
    }
    for (; index < bytes.length; index++) {
      const byte = bytes[index]!
      if (byte === 0) continue
      const bits = POPCOUNT[byte]!
      count += bits
      level0[index >>> 6] = level0[index >>> 6]! + bits
    }
    for (let level = 1; level < this.summary.length; level++) {
      const below = this.summary[level - 1]!
      const here = this.summary[level]!
      const ratio = SUMMARY_SHIFTS[level]! - SUMMARY_SHIFTS[level - 1]!
      for (let block = 0; block < below.length; block++) {
        const value = below[block]!
        if (value !== 0) here[block >>> ratio]! += value
      }
    }
    this.allocated = count
  }

  /** Add `delta` to the summary's counts of the blocks that hold `cluster`. */
  private summarise(cluster: number, delta: number): void {
    for (let level = 0; level < SUMMARY_SHIFTS.length; level++) {
      const counts = this.summary[level]!
      const block = cluster >>> SUMMARY_SHIFTS[level]!
      counts[block] = counts[block]! + delta
    }
  }

  /**
   * The number of set bits among clusters [first, end), from the summary: bits up to a byte
   * boundary, bytes up to a block, then blocks climbing the levels as alignment allows and
   * coming down them near the end, then bytes and bits again: at most about 64 steps a level.
   */
  countRange(first: number, end: number): number {
    let cluster = Math.max(0, first)
    const stop = Math.min(end, this.clusters)
    let count = 0
    while (cluster < stop && (cluster & 7) !== 0) {
      if (this.get(cluster)) count++
      cluster++
    }
    while (cluster + 8 <= stop && cluster % SUMMARY_SIZES[0]! !== 0) {
      count += POPCOUNT[this.bytes[cluster >>> 3]!]!
      cluster += 8
    }
    const levels = SUMMARY_SIZES.length
    for (let level = 0; level < levels; level++) {
      const size = SUMMARY_SIZES[level]!
      const next = SUMMARY_SIZES[level + 1]
      const counts = this.summary[level]!
      while (cluster + size <= stop && (next === undefined || cluster % next !== 0)) {
        count += counts[cluster / size]!
        cluster += size
      }
    }
    for (let level = levels - 1; level >= 0; level--) {
      const size = SUMMARY_SIZES[level]!
      const counts = this.summary[level]!
      while (cluster + size <= stop) {
        count += counts[cluster / size]!
        cluster += size
      }
    }
    while (cluster + 8 <= stop) {
      count += POPCOUNT[this.bytes[cluster >>> 3]!]!
      cluster += 8
    }
    while (cluster < stop) {
      if (this.get(cluster)) count++
      cluster++
    }
    return count
  }

  /**
   * The first cluster in [first, end) whose bit is `value`, or -1: the largest aligned block
   * of the summary that cannot hold one (no bit set, or all set) is skipped whole, then whole
   * bytes, so a search across a terabyte of unwritten clusters takes a few hundred steps.
   */
  findNext(first: number, end: number, value: boolean): number {
    let cluster = Math.max(0, first)
    const stop = Math.min(end, this.clusters)
    outer: while (cluster < stop) {
      if ((cluster & 7) !== 0 || cluster + 8 > stop) {
        if (this.get(cluster) === value) return cluster
        cluster++
        continue
      }
      for (let level = SUMMARY_SIZES.length - 1; level >= 0; level--) {
        const size = SUMMARY_SIZES[level]!
        if (cluster % size !== 0 || cluster + size > stop) continue
        const set = this.summary[level]![cluster / size]!
        if (value ? set === 0 : set === size) {
          cluster += size
          continue outer
        }
      }
      const byte = this.bytes[cluster >>> 3]!
      if (value ? byte === 0 : byte === 0xff) {
        cluster += 8
        continue
      }
      for (let bit = 0; bit < 8; bit++) if (this.get(cluster + bit) === value) return cluster + bit
      cluster += 8
    }
    return -1
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
    this.changeRange(first, end, true)
  }

  /** Clear the bits of clusters [first, end) and mark their chunks dirty. */
  clearRange(first: number, end: number): void {
    this.changeRange(first, end, false)
  }

  /**
   * Set or clear the bits of clusters [first, end) a byte at a time; each byte that changes
   * updates the count, the summary and the dirty chunks once.
   */
  private changeRange(first: number, end: number, set: boolean): void {
    const last = Math.min(end, this.bytes.length * 8)
    let cluster = Math.max(0, first)
    while (cluster < last) {
      const index = cluster >>> 3
      const from = cluster & 7
      const to = Math.min(8, last - index * 8)
      const mask = ((1 << to) - 1) & ~((1 << from) - 1) & 0xff
      const byte = this.bytes[index]!
      const next = set ? byte | mask : byte & ~mask & 0xff
      if (next !== byte) {
        this.bytes[index] = next
        const delta = POPCOUNT[next]! - POPCOUNT[byte]!
        this.allocated += delta
        this.summarise(index * 8, delta)
        this.dirty.add(Math.floor(index / BITMAP_CHUNK))
      }
      cluster = index * 8 + 8
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
