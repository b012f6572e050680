import { open, type FileHandle } from 'node:fs/promises'
import { wrapIoError } from './errors'

/** Largest single read or write issued to the OS; bigger requests are split. */
const MAX_IO = 8 * 1024 * 1024

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
        const { bytesRead } = await this.handle.read(target, done, chunk, position + done)
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
    try {
      while (done < data.length) {
        const chunk = Math.min(data.length - done, MAX_IO)
        const { bytesWritten } = await this.handle.write(data, done, chunk, position + done)
        done += bytesWritten
      }
    } catch (error) {
      throw wrapIoError(error, this.path, `write ${data.length} bytes at offset ${position} of`)
    }
  }

  async length(): Promise<number> {
    try {
      return (await this.handle.stat()).size
    } catch (error) {
      throw wrapIoError(error, this.path, 'stat')
    }
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
    try {
      await this.handle.truncate(length)
    } catch (error) {
      throw wrapIoError(error, this.path, `set the length to ${length} of`)
    }
  }

  /** fdatasync: the data written so far is durable. */
  async datasync(): Promise<void> {
    try {
      await this.handle.datasync()
    } catch (error) {
      throw wrapIoError(error, this.path, 'sync')
    }
  }

  /** fsync: data and file metadata (length) are durable. */
  async sync(): Promise<void> {
    try {
      await this.handle.sync()
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

let zeroBuffer = Buffer.alloc(0)

/** A shared read-only buffer of at least `length` zero bytes (never write into it). */
export function zeroes(length: number): Buffer {
  if (zeroBuffer.length < length) {
    zeroBuffer = Buffer.alloc(Math.max(length, 1024 * 1024))
  }
  return zeroBuffer.subarray(0, length)
}
