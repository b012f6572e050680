/** Smallest buffer the pool hands out, before the headroom. */
const MIN_CLASS = 4096
/**
 * Bytes every class has beyond its power of two, so that a reply header plus a power-of-two
 * payload (the usual request) fits the payload's class instead of the next one up.
 */
export const POOL_HEADROOM = 64

/** Idle buffers of one size class, and whether one was taken since the last sweep. */
interface SizeClass {
  free: Buffer[]
  used: boolean
}

/**
 * Reusable buffers for read replies and write payloads, by size class (a power of two plus
 * {@link POOL_HEADROOM} bytes).
 *
 * Fresh large buffers cost page faults and garbage collection on every request; a server
 * streaming gigabytes reuses the same few megabytes instead. At most `maxBytes` are kept idle,
 * and the pool shrinks on its own: every `sweepMs`, the idle buffers of a class that nobody
 * took since the last sweep are dropped, so memory goes back once the clients that needed it
 * have left (or `trim()` drops them all at once). A buffer given back must no longer be
 * referenced by anyone (the socket wrote it, the disk finished with it).
 */
export class BufferPool {
  private readonly classes = new Map<number, SizeClass>()
  private idle = 0
  private sweeper: NodeJS.Timeout | null = null

  constructor(
    private readonly maxBytes = 64 * 1024 * 1024,
    private readonly sweepMs = 2000,
  ) {}

  /** Bytes held idle, waiting to be taken again. */
  get idleBytes(): number {
    return this.idle
  }

  /** A buffer of at least `length` bytes (its whole backing size is the size class). */
  take(length: number): Buffer {
    const size = sizeClass(length)
    const entry = this.classes.get(size)
    const buffer = entry?.free.pop()
    if (entry) entry.used = true
    if (buffer) {
      this.idle -= size
      return buffer
    }
    return Buffer.allocUnsafeSlow(size)
  }

  /** Return a buffer obtained from {@link take}. */
  give(buffer: Buffer): void {
    const size = buffer.length
    if (size !== sizeClass(size) || this.idle + size > this.maxBytes) return
    let entry = this.classes.get(size)
    if (!entry) {
      entry = { free: [], used: true }
      this.classes.set(size, entry)
    }
    entry.free.push(buffer)
    this.idle += size
    if (!this.sweeper && this.sweepMs > 0) {
      this.sweeper = setInterval(() => this.sweep(), this.sweepMs)
      this.sweeper.unref()
    }
  }

  /** Drop every idle buffer now (their memory goes back once nothing else refers to them). */
  trim(): void {
    this.classes.clear()
    this.idle = 0
    this.stopSweeper()
  }

  private sweep(): void {
    for (const [size, entry] of this.classes) {
      if (entry.used) {
        entry.used = false
        continue
      }
      this.idle -= entry.free.length * size
      this.classes.delete(size)
    }
    if (this.classes.size === 0) this.stopSweeper()
  }

  private stopSweeper(): void {
    if (this.sweeper) clearInterval(this.sweeper)
    this.sweeper = null
  }
}

function sizeClass(length: number): number {
  let size = MIN_CLASS
  while (size + POOL_HEADROOM < length) size *= 2
  return size + POOL_HEADROOM
}
