import type { ImageInfo } from '../../../../shared/image-types'
import type { BlockExtent, Disk, DiskCapabilities, FormatDriver, OpenOptions, WriteOptions } from '../../disk'
import { EngineError } from '../../errors'
import { checkRange } from '../../extents'
import { BlockFile, zeroes } from '../../file'

const ZERO_CHUNK = 1024 * 1024

/**
 * A raw file: the guest view is the file itself and the virtual size its length.
 * Raw is never probed: it is what a file is when nothing else claims it.
 */
export class RawDisk implements Disk {
  readonly format = 'raw'
  readonly allocationUnit = 1
  readonly backing = null
  readonly capabilities: DiskCapabilities

  private constructor(
    private readonly file: BlockFile,
    readonly size: number,
  ) {
    this.capabilities = {
      write: file.writable,
      fastZero: false,
      discard: false,
      blockStatus: false,
      multiConn: true,
    }
  }

  static async open(path: string, readOnly: boolean): Promise<RawDisk> {
    const file = await BlockFile.open(path, !readOnly)
    try {
      return new RawDisk(file, await file.length())
    } catch (error) {
      await file.close().catch(() => undefined)
      throw error
    }
  }

  get path(): string {
    return this.file.path
  }

  get readOnly(): boolean {
    return !this.file.writable
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    checkRange(this.path, this.size, offset, target.length)
    await this.file.readAt(target, offset)
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const buffer = Buffer.allocUnsafe(length)
    await this.readInto(buffer, offset)
    return buffer
  }

  private assertWritable(): void {
    if (this.readOnly) {
      throw new EngineError('READ_ONLY', `${this.path} is open read-only.`, { path: this.path })
    }
  }

  async write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void> {
    this.assertWritable()
    checkRange(this.path, this.size, offset, data.length)
    await this.file.writeAt(data, offset)
    if (options?.fua) await this.file.datasync()
  }

  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.assertWritable()
    checkRange(this.path, this.size, offset, length)
    for (let done = 0; done < length; done += ZERO_CHUNK) {
      await this.file.writeAt(zeroes(Math.min(ZERO_CHUNK, length - done)), offset + done)
    }
    if (options?.fua) await this.file.datasync()
  }

  async discard(offset: number, length: number): Promise<void> {
    checkRange(this.path, this.size, offset, length)
  }

  async flush(): Promise<void> {
    if (!this.readOnly) await this.file.datasync()
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    checkRange(this.path, this.size, offset, length)
    return length === 0 ? [] : [{ offset, length, depth: 0, present: true, zero: false }]
  }

  async info(): Promise<ImageInfo> {
    return {
      filename: this.path,
      format: 'raw',
      'virtual-size': this.size,
      'actual-size': await this.file.allocatedBytes(),
    }
  }

  async close(): Promise<void> {
    if (!this.readOnly) await this.file.datasync()
    await this.file.close()
  }
}

/** The raw driver. */
export const rawDriver: FormatDriver = {
  name: 'raw',
  features: { create: true, write: true, backing: false },
  probe: () => 0,
  open: (path: string, options: OpenOptions) => RawDisk.open(path, options.readOnly),
}
