/** Smallest buffer the pool hands out, before the headroom. */
const MIN_CLASS = 4096
/**
 * Bytes every class has beyond its power of two, so that a reply header plus a power-of-two
 * payload (the usual request) fits the payload's class instead of the next one up.
 */
export const POOL_HEADROOM = 64

/**
 * Reusable buffers for read replies and write payloads, by size class (a power of two plus
 * {@link POOL_HEADROOM} bytes).
 *
 * Fresh large buffers cost page faults and garbage collection on every request; a server
 * streaming gigabytes reuses the same few megabytes instead. At most `maxBytes` are kept idle.
 * A buffer given back must no longer be referenced by anyone (the socket wrote it, the disk
 * finished with it).
 */
export class BufferPool {
  private readonly free = new Map<number, Buffer[]>()
  private idleBytes = 0

  constructor(private readonly maxBytes = 64 * 1024 * 1024) {}

  /** A buffer of at least `length` bytes (its whole backing size is the size class). */
  take(length: number): Buffer {
    const size = sizeClass(length)
    const list = this.free.get(size)
    const buffer = list?.pop()
    if (buffer) {
      this.idleBytes -= size
      return buffer
    }
    return Buffer.allocUnsafeSlow(size)
  }

  /** Return a buffer obtained from {@link take}. */
  give(buffer: Buffer): void {
    const size = buffer.length
    if (size !== sizeClass(size) || this.idleBytes + size > this.maxBytes) return
    let list = this.free.get(size)
    if (!list) {
      list = []
      this.free.set(size, list)
    }
    list.push(buffer)
    this.idleBytes += size
  }
}

function sizeClass(length: number): number {
  let size = MIN_CLASS
  while (size + POOL_HEADROOM < length) size *= 2
  return size + POOL_HEADROOM
}
