import { read, write } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { EngineError, wrapIoError } from './errors'

/** Largest single read or write issued to the OS; bigger requests are split. */
const MAX_IO = 8 * 1024 * 1024

/** One call that changes a file or its durability, as a {@link FileObserver} sees it. */
export type FileEvent =
  | { kind: 'write'; path: string; position: number; data: Uint8Array }
  | { kind: 'truncate'; path: string; length: number }
  /** `metadata`: fsync (data and length) rather than fdatasync. */
  | { kind: 'sync'; path: string; metadata: boolean }

/**
 * A test seam on the file layer: sees every write, truncate and sync of every {@link BlockFile}.
 *
 * Crash tests install one to model a power cut, which page-cache-backed files never show on
 * their own (kill -9 loses nothing that reached the kernel): the observer records the writes
 * since each file's last sync, and can fail calls from a chosen point on. `before` runs just
 * before the OS call; throwing from it fails the call as an I/O error would (an EngineError
 * thrown there passes through unchanged). `after` runs once the call succeeded. The `data` of a
 * write event is the caller's buffer: copy it to keep it. Never installed in production; when
 * none is installed, each call pays one null check.
 */
export interface FileObserver {
  before?(event: FileEvent): void
  after?(event: FileEvent): void
}

let observer: FileObserver | null = null

/**
 * Install `next` as the process-wide {@link FileObserver} (null removes it); returns the one it
 * replaces. Tests only.
 */
export function setFileObserver(next: FileObserver | null): FileObserver | null {
  const previous = observer
  observer = next
  return previous
}

/**
 * Positional I/O on one open file, with the path kept for error messages.
 *
 * Reads past the end of the file return zeros (a short file behaves like a sparse one); every
 * OS error becomes an EngineError naming the file.
 */
export class BlockFile {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly writable: boolean,
  ) {}

  /** Open `path` read-only, or read-write when `writable`. */
  static async open(path: string, writable: boolean): Promise<BlockFile> {
    try {
      const handle = await open(path, writable ? 'r+' : 'r')
      return new BlockFile(path, handle, writable)
    } catch (error) {
      throw wrapIoError(error, path, writable ? 'open for writing' : 'open')
    }
  }

  /** Create `path`, failing if it exists (`exclusive`) or truncating nothing otherwise. */
  static async create(path: string, exclusive: boolean): Promise<BlockFile> {
    try {
      const handle = await open(path, exclusive ? 'wx+' : 'a+')
      await handle.close()
      return await BlockFile.open(path, true)
    } catch (error) {
      throw wrapIoError(error, path, 'create')
    }
  }

  get fd(): number {
    return this.handle.fd
  }

  /** Fill `target` from position `position`; zeros past the end of the file. */
  async readAt(target: Uint8Array, position: number): Promise<void> {
    let done = 0
    try {
      while (done < target.length) {
        const chunk = Math.min(target.length - done, MAX_IO)
        const bytesRead = await positional(read, this.handle.fd, target, done, chunk, position + done)
        if (bytesRead === 0) {
          target.fill(0, done)
          return
        }
        done += bytesRead
      }
    } catch (error) {
      throw wrapIoError(error, this.path, `read ${target.length} bytes at offset ${position} of`)
    }
  }

  /** Write all of `data` at `position`. */
  async writeAt(data: Uint8Array, position: number): Promise<void> {
    let done = 0
    const watcher = observer
    const event: FileEvent | null = watcher ? { kind: 'write', path: this.path, position, data } : null
    try {
      if (event) watcher?.before?.(event)
      while (done < data.length) {
        const chunk = Math.min(data.length - done, MAX_IO)
        const bytesWritten = await positional(write, this.handle.fd, data, done, chunk, position + done)
        done += bytesWritten
      }
      if (event) watcher?.after?.(event)
    } catch (error) {
      throw wrapIoError(error, this.path, `write ${data.length} bytes at offset ${position} of`)
    }
  }

  /** The file's length; SIZE_LIMIT beyond 2^53 - 1 bytes, which this engine cannot address. */
  async length(): Promise<number> {
    let size: bigint
    try {
      size = (await this.handle.stat({ bigint: true })).size
    } catch (error) {
      throw wrapIoError(error, this.path, 'stat')
    }
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new EngineError(
        'SIZE_LIMIT',
        `${this.path} is ${size} bytes long, more than this tool can address (2^53 - 1).`,
        { path: this.path, field: 'file length', value: size.toString() },
      )
    }
    return Number(size)
  }

  /** Bytes allocated on disk (st_blocks * 512). */
  async allocatedBytes(): Promise<number> {
    try {
      return (await this.handle.stat()).blocks * 512
    } catch (error) {
      throw wrapIoError(error, this.path, 'stat')
    }
  }

  /** Set the file length (grows sparsely). */
  async truncate(length: number): Promise<void> {
    const watcher = observer
    const event: FileEvent | null = watcher ? { kind: 'truncate', path: this.path, length } : null
    try {
      if (event) watcher?.before?.(event)
      await this.handle.truncate(length)
      if (event) watcher?.after?.(event)
    } catch (error) {
      throw wrapIoError(error, this.path, `set the length to ${length} of`)
    }
  }

  /** fdatasync: the data written so far is durable. */
  async datasync(): Promise<void> {
    const watcher = observer
    const event: FileEvent | null = watcher ? { kind: 'sync', path: this.path, metadata: false } : null
    try {
      if (event) watcher?.before?.(event)
      await this.handle.datasync()
      if (event) watcher?.after?.(event)
    } catch (error) {
      throw wrapIoError(error, this.path, 'sync')
    }
  }

  /** fsync: data and file metadata (length) are durable. */
  async sync(): Promise<void> {
    const watcher = observer
    const event: FileEvent | null = watcher ? { kind: 'sync', path: this.path, metadata: true } : null
    try {
      if (event) watcher?.before?.(event)
      await this.handle.sync()
      if (event) watcher?.after?.(event)
    } catch (error) {
      throw wrapIoError(error, this.path, 'sync')
    }
  }

  async close(): Promise<void> {
    try {
      await this.handle.close()
    } catch (error) {
      throw wrapIoError(error, this.path, 'close')
    }
  }
}

/**
 * One pread or pwrite through the callback API, which costs the event loop far less per call
 * than FileHandle.read/write (no FileHandle bookkeeping, no promise made in C++).
 */
function positional(
  call: typeof read | typeof write,
  fd: number,
  buffer: Uint8Array,
  offset: number,
  length: number,
  position: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    ;(call as typeof read)(fd, buffer, offset, length, position, (error, bytes) => (error ? reject(error) : resolve(bytes)))
  })
}

let zeroBuffer = Buffer.alloc(0)

/** A shared read-only buffer of at least `length` zero bytes (never write into it). */
export function zeroes(length: number): Buffer {
  if (zeroBuffer.length < length) {
    zeroBuffer = Buffer.alloc(Math.max(length, 1024 * 1024))
  }
  return zeroBuffer.subarray(0, length)
}
