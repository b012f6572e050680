import type { Duplex } from 'node:stream'
import type { BufferPool } from './buffer-pool'

/** Thrown by {@link StreamReader.read} when the peer closed the stream before enough bytes came. */
export class StreamClosedError extends Error {
  constructor(readonly buffered: number) {
    super('The connection was closed.')
    this.name = 'StreamClosedError'
  }
}

/**
 * Reads exact byte counts from a stream, with bounded buffering: the stream is paused while
 * more than `highWater` bytes (or the pending read's size, if larger) wait unread, so a client
 * that sends faster than the server consumes is held back by TCP, never by memory.
 */
export class StreamReader {
  private chunks: Buffer[] = []
  private buffered = 0
  private waiter: { size: number; resolve: () => void; reject: (error: Error) => void } | null =
    null
  private ended = false
  private failure: Error | null = null
  private stream: Duplex | null = null
  private readonly onData = (chunk: Buffer): void => this.push(chunk)
  private readonly onEnd = (): void => this.finish(null)
  private readonly onError = (error: Error): void => this.finish(error)

  constructor(
    stream: Duplex,
    private readonly highWater = 1024 * 1024,
  ) {
    this.attach(stream)
  }

  /** Bytes received and not yet read. */
  get pending(): number {
    return this.buffered
  }

  /** Start reading from `stream` (after {@link detach}, e.g. once TLS wraps the socket). */
  attach(stream: Duplex): void {
    this.stream = stream
    this.ended = false
    this.failure = null
    stream.on('data', this.onData)
    stream.on('end', this.onEnd)
    stream.on('close', this.onEnd)
    stream.on('error', this.onError)
  }

  /** Stop reading from the current stream; returns the bytes received and not yet read. */
  detach(): Buffer {
    const stream = this.stream
    if (stream) {
      stream.off('data', this.onData)
      stream.off('end', this.onEnd)
      stream.off('close', this.onEnd)
      stream.off('error', this.onError)
      stream.pause()
    }
    this.stream = null
    const rest = Buffer.concat(this.chunks, this.buffered)
    this.chunks = []
    this.buffered = 0
    return rest
  }

  /** Stop reading for good: a pending or later read rejects as if the stream had ended. */
  abort(): void {
    this.detach()
    this.finish(null)
  }

  private push(chunk: Buffer): void {
    this.chunks.push(chunk)
    this.buffered += chunk.length
    const waiter = this.waiter
    if (waiter && this.buffered >= waiter.size) {
      this.waiter = null
      waiter.resolve()
    }
    if (this.buffered >= Math.max(this.highWater, this.waiter?.size ?? 0)) this.stream?.pause()
  }

  private finish(error: Error | null): void {
    if (this.ended) return
    this.ended = true
    this.failure = error
    const waiter = this.waiter
    this.waiter = null
    waiter?.reject(error ?? new StreamClosedError(this.buffered))
  }

  private async fill(size: number): Promise<void> {
    if (this.buffered >= size) return
    if (this.ended) throw this.failure ?? new StreamClosedError(this.buffered)
    await new Promise<void>((resolve, reject) => {
      this.waiter = { size, resolve, reject }
      this.stream?.resume()
    })
  }

  /** Exactly `size` bytes if they are already buffered, else null (no promise on the fast path). */
  tryRead(size: number): Buffer | null {
    return this.buffered >= size ? this.take(size) : null
  }

  /** Exactly `size` bytes; rejects with {@link StreamClosedError} if the stream ends first. */
  async read(size: number): Promise<Buffer> {
    await this.fill(size)
    return this.take(size)
  }

  /**
   * Exactly `size` bytes, copied into a pooled buffer when they span several received chunks;
   * call `release` once the data is no longer used.
   */
  async readPooled(size: number, pool: BufferPool): Promise<{ data: Buffer; release: () => void }> {
    await this.fill(size)
    const first = this.chunks[0]
    if (size === 0 || (first && first.length >= size))
      return { data: this.take(size), release: () => undefined }
    const backing = pool.take(size)
    const data = this.take(size, backing.subarray(0, size))
    return { data, release: () => pool.give(backing) }
  }

  /** Discard exactly `size` bytes without holding more than the high-water mark. */
  async skip(size: number): Promise<void> {
    let left = size
    while (left > 0) {
      const step = Math.min(left, this.highWater)
      await this.fill(step)
      this.take(step)
      left -= step
    }
  }

  private take(size: number, into?: Buffer): Buffer {
    if (size === 0) return Buffer.alloc(0)
    const first = this.chunks[0]!
    let result: Buffer
    if (!into && first.length > size) {
      result = first.subarray(0, size)
      this.chunks[0] = first.subarray(size)
    } else if (!into && first.length === size) {
      result = first
      this.chunks.shift()
    } else {
      result = into ?? Buffer.allocUnsafe(size)
      let done = 0
      while (done < size) {
        const chunk = this.chunks[0]!
        const part = Math.min(chunk.length, size - done)
        chunk.copy(result, done, 0, part)
        done += part
        if (part === chunk.length) this.chunks.shift()
        else this.chunks[0] = chunk.subarray(part)
      }
    }
    this.buffered -= size
    if (this.buffered < this.highWater && !this.ended) this.stream?.resume()
    return result
  }
}
