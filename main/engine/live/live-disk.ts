import type { ImageInfo } from '../../../shared/image-types'
import type {
  AllocationVisitor,
  BackingLink,
  BlockExtent,
  Disk,
  DiskCapabilities,
  FileMapping,
  WriteOptions,
} from '../disk'
import { EngineError } from '../errors'
import type { BlockFile } from '../file'
import { chainOf } from '../open'
import { copyUp } from './copy-on-read'
import { RangeLock } from './range-lock'

/** Smallest lock granule: a guest page, so 4 KiB writes to neighbouring pages run in parallel. */
const MIN_GRANULE = 4096

/** How {@link LiveDisk.quiesce} quiesces. */
export interface QuiesceOptions {
  /**
   * Flush the top once the requests in flight finished (default true). A live snapshot skips
   * it and flushes the old top after the pause: the swap keeps it flushed with the new top.
   */
  flush?: boolean
}

/** The phases of one quiesce, in milliseconds. */
export interface QuiesceTimes {
  /** Waiting for the requests in flight. */
  drainMs: number
  /** Flushing the top. */
  flushMs: number
  /** The caller's function (a snapshot: open, lock, swap, close). */
  runMs: number
  /** All of it: how long new requests were held. */
  totalMs: number
}

/** Called after each guest write, zero write or discard, with the bytes it touched. */
export type GuestWriteObserver = (offset: number, length: number) => void

/** Called when the export serves another top, with it and the top it served before. */
export type SwapObserver = (next: Disk, previous: Disk) => void

/**
 * The disk an export serves, wrapping the top it serves now (`current`), so that a live
 * operation can put another top in its place without the NBD server (or its clients) noticing:
 * every Disk call is forwarded to `current`.
 *
 * Three things make live operations safe against the guest:
 * - {@link quiesce}: hold new requests (never fail them), let those in flight finish, flush,
 *   run the caller's function (which may {@link swap} the top), then let the held requests go,
 *   now to the new top. A live snapshot's whole pause is one quiesce.
 * - {@link withRanges}: an exclusive lock over the lock granules a range touches, taken by every
 *   guest write, zero write and discard through this disk, and by jobs that write into the top
 *   ("re-check the allocation, then copy" is atomic against the guest, so a guest write always
 *   wins). A granule is a power of two at least as large as every allocation unit of the chain,
 *   so two ranges touching one cluster of any layer always share a granule.
 * - {@link onGuestWrite}: observers of guest writes (active commit's dirty tracking), called
 *   while the range is still locked, so a job that then takes the range sees the write done.
 *
 * Rules for callers: inside `quiesce` and `withRanges`, do I/O on the `current` handed to the
 * function, never through this LiveDisk (its requests would wait for the function to end).
 * The optional abilities are those `current` has, bound to it (`live.markAllocated?.(…)` marks
 * the top now served).
 */
export class LiveDisk implements Disk {
  private top: Disk
  private granule: number
  private readonly ranges = new RangeLock()
  private readonly observers = new Set<GuestWriteObserver>()
  private readonly swapObservers = new Set<SwapObserver>()
  /** Requests started and not finished (guest I/O and `withRanges` bodies). */
  private inFlight = 0
  private drained: (() => void) | null = null
  /** Set while a quiesce holds new requests; resolved when it lets them go. */
  private gate: Promise<void> | null = null
  /** The previous quiesce, so that two never overlap. */
  private quiescing: Promise<unknown> = Promise.resolve()
  private insideQuiesce = false
  private swaps = 0
  private held: QuiesceTimes | null = null
  /**
   * Copy what reads find below the top into it (`serve --copy-on-read`): see copy-on-read.ts.
   * A read answers only once its clusters were copied, as QEMU's copy-on-read does.
   */
  copyOnRead = false
  /** Copies up that failed (`status` shows them): counted, the last one kept in words. */
  readonly copyOnReadErrors: { count: number; last?: { message: string; at: string } } = {
    count: 0,
  }
  /** Old tops swapped out while still writable, flushed with the top until frozen. */
  private readonly unsettled = new Set<Disk>()

  constructor(disk: Disk) {
    this.top = disk
    this.granule = lockGranule(disk)
  }

  /** The top served now. */
  get current(): Disk {
    return this.top
  }

  /** How many times the top was replaced since the export started. */
  get swapCount(): number {
    return this.swaps
  }

  /** How long the last quiesce held requests, by phase (what a pause is made of). */
  get lastQuiesce(): QuiesceTimes | null {
    return this.held
  }

  /** Requests in flight now (guest I/O and range-locked job bodies). */
  get pending(): number {
    return this.inFlight
  }

  get path(): string {
    return this.top.path
  }
  get format(): string {
    return this.top.format
  }
  get size(): number {
    return this.top.size
  }
  get readOnly(): boolean {
    return this.top.readOnly
  }
  get capabilities(): DiskCapabilities {
    return this.top.capabilities
  }
  get allocationUnit(): number {
    return this.top.allocationUnit
  }
  get backing(): Disk | null {
    return this.top.backing
  }

  /**
   * Hold new requests, wait for those in flight, flush the top, run `fn` on it and let the
   * held requests go (to whatever top `fn` left in place). Quiesces run one after another. The
   * requests are held, not failed, however long `fn` takes; a throw from the flush or `fn`
   * still releases them and reaches the caller.
   */
  quiesce<T>(fn: (current: Disk) => Promise<T>, options: QuiesceOptions = {}): Promise<T> {
    const run = this.quiescing.then(() => this.quiesceNow(fn, options.flush ?? true))
    this.quiescing = run.catch(() => undefined)
    return run
  }

  private async quiesceNow<T>(fn: (current: Disk) => Promise<T>, flush: boolean): Promise<T> {
    let open!: () => void
    this.gate = new Promise<void>((resolve) => (open = resolve))
    const started = performance.now()
    const times: QuiesceTimes = { drainMs: 0, flushMs: 0, runMs: 0, totalMs: 0 }
    try {
      if (this.inFlight > 0) await new Promise<void>((resolve) => (this.drained = resolve))
      this.drained = null
      const drained = performance.now()
      times.drainMs = drained - started
      if (flush && !this.top.readOnly) await this.top.flush()
      const flushed = performance.now()
      times.flushMs = flushed - drained
      this.insideQuiesce = true
      try {
        return await fn(this.top)
      } finally {
        times.runMs = performance.now() - flushed
      }
    } finally {
      this.insideQuiesce = false
      this.gate = null
      times.totalMs = performance.now() - started
      this.held = times
      open()
    }
  }

  /**
   * Serve `next` from now on and return the old top (the caller closes or freezes it). Only
   * inside {@link quiesce}: no request is in flight, so none straddles the two tops. An old
   * top still writable (a quiesce without flush) is flushed by every flush of this disk until
   * it is read-only (frozen) or closed, so a guest flush after the swap still covers the
   * writes it made before it.
   */
  swap(next: Disk): Disk {
    if (!this.insideQuiesce)
      throw new EngineError('INTERNAL', 'A live disk swaps its top only inside quiesce().')
    if (next.size !== this.top.size) {
      throw new EngineError(
        'INTERNAL',
        `The new top ${next.path} is ${next.size} bytes; the export serves ${this.top.size}.`,
        { path: next.path, field: 'size', value: next.size },
      )
    }
    const old = this.top
    if (!old.readOnly) this.unsettled.add(old)
    this.top = next
    this.granule = lockGranule(next)
    this.swaps++
    for (const observer of this.swapObservers) {
      try {
        observer(next, old)
      } catch {
        // An observer's failure is its own: the swap is done and the guest waits on it.
      }
    }
    return old
  }

  /**
   * Run `fn` with the granules [offset, offset + length) touches locked against guest writes
   * and other jobs, and counted as in flight (a quiesce waits for it to end).
   */
  async withRanges<T>(
    offset: number,
    length: number,
    fn: (current: Disk) => Promise<T>,
  ): Promise<T> {
    const entering = this.enter()
    if (entering) await entering
    try {
      const release = this.tryLockRange(offset, length) ?? (await this.lockRange(offset, length))
      try {
        return await fn(this.top)
      } finally {
        release()
      }
    } finally {
      this.leave()
    }
  }

  /** Observe guest writes; returns the function that stops observing. */
  onGuestWrite(observer: GuestWriteObserver): () => void {
    this.observers.add(observer)
    return () => this.observers.delete(observer)
  }

  /**
   * Observe changes of the top served, whoever makes them (a snapshot or an active commit,
   * from the app or from `addcow job` on the control socket); returns the function that stops
   * observing. Called inside the quiesce, with the guest's requests held: do not wait there.
   */
  onSwap(observer: SwapObserver): () => void {
    this.swapObservers.add(observer)
    return () => this.swapObservers.delete(observer)
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    const top = await this.forward(async (disk) => {
      await disk.readInto(target, offset)
      return disk
    })
    // A copy that fails (a full disk) costs the warming, not the guest's read, which has its
    // data: the clusters stay below and the next read tries again.
    if (this.copyOnRead)
      await copyUp(this, top, offset, target.length).catch((error: unknown) =>
        this.noteCopyOnReadError(top, offset, target.length, error),
      )
  }

  /** Count a failed copy up and keep it in words: the file, the range and what went wrong. */
  private noteCopyOnReadError(top: Disk, offset: number, length: number, error: unknown): void {
    const reason = error instanceof Error ? error.message : String(error)
    this.copyOnReadErrors.count += 1
    this.copyOnReadErrors.last = {
      message: `Copying bytes ${offset}-${offset + length} up into ${top.path} failed: ${reason}`,
      at: new Date().toISOString(),
    }
  }

  /**
   * The top's mapping, counted as a read in flight until it is released: a quiesce (a
   * snapshot, an active commit emptying the top and closing it) waits for the bytes to be sent.
   * Null while a quiesce holds requests, or with copy-on-read on (a read must copy up): read
   * then, which waits its turn.
   */
  mapFiles(offset: number, length: number): FileMapping | null {
    if (this.gate || this.copyOnRead) return null
    const mapping = this.top.mapFiles?.(offset, length) ?? null
    if (!mapping) return null
    // No gate: entering counts it in flight at once (no promise to wait for).
    void this.enter()
    let held = true
    return {
      pieces: mapping.pieces,
      release: () => {
        if (!held) return
        held = false
        mapping.release()
        this.leave()
      },
    }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buffer = Buffer.allocUnsafe(length)
    await this.readInto(buffer, offset)
    return buffer
  }

  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    return this.guestWrite(offset, data.length, (disk) => disk.write(offset, data, options))
  }

  writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    return this.guestWrite(offset, length, (disk) => disk.writeZeroes(offset, length, options))
  }

  discard(offset: number, length: number): Promise<void> {
    return this.guestWrite(offset, length, (disk) => disk.discard(offset, length))
  }

  flush(): Promise<void> {
    return this.forward(async (disk) => {
      for (const old of this.unsettled) {
        if (!old.readOnly) await old.flush()
        if (old.readOnly) this.unsettled.delete(old)
      }
      await disk.flush()
    })
  }

  /** Stop flushing `old` with the top (the caller closed it). */
  settle(old: Disk): void {
    this.unsettled.delete(old)
  }

  blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    return this.forward((disk) => disk.blockStatus(offset, length))
  }

  info(): Promise<ImageInfo> {
    return this.forward((disk) => disk.info())
  }

  /** Close the top now served (and its chain); the export stopped sending requests. */
  async close(): Promise<void> {
    for (const old of this.unsettled) await old.flush().catch(() => undefined)
    this.unsettled.clear()
    await this.top.close()
  }

  get files(): (() => string[]) | undefined {
    return this.top.files?.bind(this.top)
  }
  get backingLink(): (() => BackingLink | null) | undefined {
    return this.top.backingLink?.bind(this.top)
  }
  get dataFile(): (() => BlockFile) | undefined {
    return this.top.dataFile?.bind(this.top)
  }
  get allocationCount(): (() => { allocated: number; total: number }) | undefined {
    return this.top.allocationCount?.bind(this.top)
  }
  get forEachAllocationRun():
    ((first: number, end: number, visit: AllocationVisitor) => void) | undefined {
    return this.top.forEachAllocationRun?.bind(this.top)
  }
  get countAllocated(): ((first: number, end: number) => number) | undefined {
    return this.top.countAllocated?.bind(this.top)
  }
  get nextAllocatedRun(): ((first: number, end: number) => [number, number] | null) | undefined {
    return this.top.nextAllocatedRun?.bind(this.top)
  }
  get isAllAllocated(): (() => boolean) | undefined {
    return this.top.isAllAllocated?.bind(this.top)
  }
  get markAllocated(): ((first: number, end: number) => void) | undefined {
    return this.top.markAllocated?.bind(this.top)
  }
  get markUnallocated(): ((first: number, end: number) => void) | undefined {
    return this.top.markUnallocated?.bind(this.top)
  }
  get setAllAllocated(): (() => Promise<void>) | undefined {
    return this.top.setAllAllocated?.bind(this.top)
  }
  get clearAllAllocatedAndClose(): (() => Promise<void>) | undefined {
    return this.top.clearAllAllocatedAndClose?.bind(this.top)
  }
  get growAndClose(): ((size: number) => Promise<void>) | undefined {
    return this.top.growAndClose?.bind(this.top)
  }
  get shrinkAndClose(): ((size: number) => Promise<void>) | undefined {
    return this.top.shrinkAndClose?.bind(this.top)
  }
  get savedState(): (() => string) | undefined {
    return this.top.savedState?.bind(this.top)
  }
  get freeze(): (() => Promise<void>) | undefined {
    return this.top.freeze?.bind(this.top)
  }

  /** Run one request on the top, counted in flight (held while a quiesce runs). */
  private async forward<T>(request: (disk: Disk) => Promise<T>): Promise<T> {
    const entering = this.enter()
    if (entering) await entering
    try {
      return await request(this.top)
    } finally {
      this.leave()
    }
  }

  /** A guest write: in flight, under the range lock, observed before the lock goes. */
  private guestWrite(
    offset: number,
    length: number,
    request: (disk: Disk) => Promise<void>,
  ): Promise<void> {
    return this.withRanges(offset, length, async (disk) => {
      try {
        await request(disk)
      } finally {
        // Observed even when it failed: part of it may have reached the disk.
        if (length > 0) for (const observer of this.observers) observer(offset, length)
      }
    })
  }

  private lockRange(offset: number, length: number): Promise<() => void> {
    const [first, end] = this.granules(offset, length)
    return this.ranges.acquire(first, end)
  }

  /** The lock of {@link lockRange} if it is free now, else null (then wait with lockRange). */
  private tryLockRange(offset: number, length: number): (() => void) | null {
    const [first, end] = this.granules(offset, length)
    return this.ranges.tryAcquire(first, end)
  }

  /** The lock granules [first, end) that a range touches (at least one). */
  private granules(offset: number, length: number): [number, number] {
    const granule = this.granule
    const first = Math.floor(offset / granule)
    return [first, Math.max(first + 1, Math.ceil((offset + length) / granule))]
  }

  /**
   * Count a request in flight, first waiting while a quiesce holds requests. Not async: the
   * usual request (no quiesce) enters without a promise.
   */
  private enter(): Promise<void> | undefined {
    if (!this.gate) {
      this.inFlight++
      return undefined
    }
    return this.enterAfterGate()
  }

  private async enterAfterGate(): Promise<void> {
    while (this.gate) await this.gate
    this.inFlight++
  }

  private leave(): void {
    this.inFlight--
    if (this.inFlight === 0) this.drained?.()
  }
}

/**
 * The lock granule for a chain: the smallest power of two (at least {@link MIN_GRANULE}) that
 * every layer's allocation unit divides, so ranges that share a cluster of any layer share a
 * granule.
 */
export function lockGranule(disk: Disk): number {
  let granule = MIN_GRANULE
  for (const layer of chainOf(disk)) {
    while (granule < layer.allocationUnit) granule *= 2
  }
  return granule
}
