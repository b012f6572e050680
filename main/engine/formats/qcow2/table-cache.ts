/**
 * A bounded least-recently-used cache of metadata tables (qcow2 L2 tables and refcount blocks),
 * keyed by their offset in the file. Dirty tables are never evicted: the owner writes them back
 * (in the order the format needs) and marks them clean. Loads of the same table that overlap in
 * time share one read.
 */
export class TableCache {
  private readonly tables = new Map<number, { data: Buffer; dirty: boolean }>()
  private readonly loading = new Map<number, Promise<Buffer>>()

  constructor(
    /** Most clean tables kept. */
    readonly capacity: number,
    private readonly load: (offset: number) => Promise<Buffer>,
  ) {}

  /** The table at `offset`, from the cache or read (and cached). */
  async get(offset: number): Promise<Buffer> {
    const cached = this.tables.get(offset)
    if (cached) {
      this.tables.delete(offset)
      this.tables.set(offset, cached)
      return cached.data
    }
    const pending = this.loading.get(offset)
    if (pending) return pending
    const read = this.load(offset).then((data) => {
      const raced = this.tables.get(offset)
      if (raced) return raced.data
      this.tables.set(offset, { data, dirty: false })
      this.evict()
      return data
    })
    this.loading.set(offset, read)
    try {
      return await read
    } finally {
      this.loading.delete(offset)
    }
  }

  /** Put a table the owner built in memory (a new one), dirty. */
  add(offset: number, data: Buffer): void {
    this.tables.set(offset, { data, dirty: true })
    this.evict()
  }

  /** Mark the cached table at `offset` as changed. */
  markDirty(offset: number): void {
    const entry = this.tables.get(offset)
    if (entry) entry.dirty = true
  }

  /** Dirty tables, in ascending offset order. */
  dirtyEntries(): { offset: number; data: Buffer }[] {
    const list: { offset: number; data: Buffer }[] = []
    for (const [offset, entry] of this.tables)
      if (entry.dirty) list.push({ offset, data: entry.data })
    return list.sort((a, b) => a.offset - b.offset)
  }

  /** Mark these tables clean (after they were written back). */
  markClean(offsets: number[]): void {
    for (const offset of offsets) {
      const entry = this.tables.get(offset)
      if (entry) entry.dirty = false
    }
    this.evict()
  }

  /** Number of dirty tables. */
  get dirtyCount(): number {
    let count = 0
    for (const entry of this.tables.values()) if (entry.dirty) count++
    return count
  }

  private evict(): void {
    if (this.tables.size <= this.capacity) return
    for (const [offset, entry] of this.tables) {
      if (this.tables.size <= this.capacity) break
      if (!entry.dirty) this.tables.delete(offset)
    }
  }
}
