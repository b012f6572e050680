import type { ImageInfo } from '../../../../shared/image-types'
import { resolve } from 'node:path'
import type {
  ConvertIntoOptions,
  BlockExtent,
  CreatedImage,
  CreateImageOptions,
  Disk,
  DiskCapabilities,
  FileMapping,
  FormatDriver,
  OpenOptions,
  WriteOptions,
} from '../../disk'
import { HOLDS_NOTHING } from '../../disk'
import { EngineError, wrapIoError } from '../../errors'
import { checkRange, readInPieces } from '../../extents'
import { BlockFile, readFilePieces, zeroes } from '../../file'
import { growFile, replaceFile } from '../../fs'
import { native } from '../../native/index'
import { forEachGuestWindow, isAllZero } from '../common/guest-windows'
import { fileStatus, firstDataExtent, punchOrZero } from '../common/sparse'
import { RAW_FORMAT } from './format'

const ZERO_CHUNK = 1024 * 1024
/** Reads longer than this are split into pieces read in parallel (see readInPieces). */
const READ_PIECE = 512 * 1024
const READ_PARALLELISM = 4

/**
 * A raw file: the guest view is the file itself and the virtual size its length.
 * Raw is never probed: it is what a file is when nothing else claims it.
 */
export class RawDisk implements Disk {
  readonly format = 'raw'
  readonly allocationUnit = 1
  readonly backing = null
  readonly capabilities: DiskCapabilities

  /**
   * The last data extent [start, end) the file was found to have, or null: block status inside
   * it is answered without a system call (qemu's file-posix keeps the same one-entry cache). A
   * write only turns holes into data, so it stays true; a discard or punched zeroes clears it.
   * Like qemu, it trusts that no other process punches holes in the file meanwhile: a served or
   * launched chain is locked against other writers.
   */
  private knownData: [number, number] | null = null
  /**
   * The last hole [start, end) found, or null: the same one-entry cache for a sparse file's
   * holes (a sparse 1 TiB base is mostly one hole per extent, asked about once per map bin).
   * Any write, zeroing or discard through this disk clears it.
   */
  private knownHole: [number, number] | null = null

  private constructor(
    private readonly file: BlockFile,
    readonly size: number,
  ) {
    this.capabilities = {
      write: file.writable,
      // With the native addon, holes are punched (cheap zeroes, real discard) and listed
      // (SEEK_DATA/SEEK_HOLE), so map and NBD block status show a sparse raw file's holes.
      fastZero: file.writable && (native()?.features.punchHole ?? false),
      discard: file.writable && (native()?.features.punchHole ?? false),
      blockStatus: native()?.features.seekData ?? false,
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

  /** The open file's descriptor (for batched reads through the native addon). */
  get fd(): number {
    return this.file.fd
  }

  get path(): string {
    return this.file.path
  }

  get readOnly(): boolean {
    return !this.file.writable
  }

  async readInto(target: Uint8Array, offset: number): Promise<void> {
    checkRange(this.path, this.size, offset, target.length)
    const file = this.file
    const whole = readFilePieces(target, [file.fd, offset, 0, target.length])
    if (whole) {
      await whole.catch((error: unknown) => {
        throw wrapIoError(error, this.path, `read ${target.length} bytes at offset ${offset} of`)
      })
      return
    }
    await readInPieces(target, offset, READ_PIECE, READ_PARALLELISM, (part, at) =>
      file.readAt(part, at),
    )
  }

  mapFiles(offset: number, length: number): FileMapping {
    checkRange(this.path, this.size, offset, length)
    return { pieces: [this.file.fd, offset, length], release: HOLDS_NOTHING }
  }

  async read(offset: number, length: number): Promise<Buffer> {
    checkRange(this.path, this.size, offset, length)
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
    this.knownHole = null
    await this.file.writeAt(data, offset)
    if (options?.fua) await this.file.datasync()
  }

  async writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void> {
    this.assertWritable()
    checkRange(this.path, this.size, offset, length)
    this.knownHole = null
    if (this.capabilities.fastZero) {
      this.knownData = null
      await punchOrZero(this.file, offset, length)
      this.knownData = null
    } else {
      for (let done = 0; done < length; done += ZERO_CHUNK) {
        await this.file.writeAt(zeroes(Math.min(ZERO_CHUNK, length - done)), offset + done)
      }
    }
    if (options?.fua) await this.file.datasync()
  }

  /** Free the range's blocks where holes can be punched (it then reads as zeros). */
  async discard(offset: number, length: number): Promise<void> {
    checkRange(this.path, this.size, offset, length)
    if (!this.capabilities.discard) return
    this.knownData = null
    this.knownHole = null
    await punchOrZero(this.file, offset, length)
    this.knownData = null
  }

  async flush(): Promise<void> {
    if (!this.readOnly) await this.file.datasync()
  }

  async blockStatus(offset: number, length: number): Promise<BlockExtent[]> {
    checkRange(this.path, this.size, offset, length)
    if (length === 0) return []
    const end = offset + length
    const known = this.knownData
    if (known && offset >= known[0] && end <= known[1])
      return [{ offset, length, depth: 0, present: true, zero: false }]
    const hole = this.knownHole
    if (hole && offset >= hole[0] && end <= hole[1])
      return [{ offset, length, depth: 0, present: true, zero: true }]
    if (this.capabilities.blockStatus) {
      // Probe the extent at `offset` to the end of the file: a range inside one data extent
      // (the common case: a dense base) needs nothing more, and the extent is kept.
      const first = firstDataExtent(this.file, offset, this.size)
      if (first && first[0] === offset && first[1] >= end) {
        this.knownData = first
        return [{ offset, length, depth: 0, present: true, zero: false }]
      }
      if (first === null || (first && first[0] >= end)) {
        this.knownHole = [offset, first ? first[0] : this.size]
        return [{ offset, length, depth: 0, present: true, zero: true }]
      }
    }
    // Like qemu's file driver: a hole in a raw file is present (raw has no backing) and zero.
    const status = this.capabilities.blockStatus ? await fileStatus(this.file, offset, end) : null
    return status ?? [{ offset, length, depth: 0, present: true, zero: false }]
  }

  async info(): Promise<ImageInfo> {
    return {
      filename: this.path,
      format: 'raw',
      'virtual-size': this.size,
      'actual-size': await this.file.allocatedBytes(),
    }
  }

  /** The file itself: all of a raw disk's data, at guest offsets. */
  dataFile(): BlockFile {
    return this.file
  }

  /** Grow the file to `size` bytes (sparsely; never shrinks), sync it, and close. */
  async growAndClose(size: number): Promise<void> {
    this.assertWritable()
    const grow = size > this.size
    await this.close()
    if (grow) await growFile(this.path, size)
  }

  /** Cut the file to `size` bytes (never grows), sync it, and close. */
  async shrinkAndClose(size: number): Promise<void> {
    this.assertWritable()
    try {
      if (size < this.size) {
        await this.file.truncate(size)
        await this.file.sync()
      }
    } finally {
      await this.close()
    }
  }

  /** Sync (when writable) and close; the file is closed even when the sync fails. */
  async close(): Promise<void> {
    try {
      if (!this.readOnly) await this.file.datasync()
    } finally {
      await this.file.close()
    }
  }
}

/** Create a sparse raw file of `size` bytes (it must not exist). */
async function createRaw(options: CreateImageOptions): Promise<CreatedImage> {
  const path = resolve(options.path)
  const size = options.size ?? options.backing?.size
  if (size === undefined || !Number.isSafeInteger(size) || size < 0) {
    throw new EngineError('BAD_ARGUMENT', `A size is needed to create ${path}.`, {
      path,
      field: 'size',
      value: size,
    })
  }
  if (options.backing) {
    throw new EngineError('NOT_CAPABLE', `A raw file cannot have a backing file (${path}).`, {
      path,
      field: 'backing',
    })
  }
  await replaceFile(path, (file) => file.truncate(size), { exclusive: true, doing: 'create' })
  return { path, size, files: [path], created: [path], clusterSize: null }
}

/** Bytes per piece convert looks at: an all-zero piece stays a hole in the new raw file. */
const SPARSE_PIECE = 64 * 1024

/**
 * A new raw file with the guest view of `options.source` (`addcow convert -O raw`): sized to
 * the virtual size, data written where it is not zero, zeros left as holes; atomic.
 */
async function convertIntoRaw(options: ConvertIntoOptions): Promise<void> {
  const source = options.source
  await replaceFile(
    options.path,
    async (file) => {
      await file.truncate(source.size)
      await forEachGuestWindow(
        source,
        { ...options, unit: SPARSE_PIECE, operation: 'convert' },
        async ({ start, length, data, knownZero }) => {
          if (!data) return
          let runStart = -1
          const flush = async (end: number): Promise<void> => {
            if (runStart < 0) return
            await file.writeAt(data.subarray(runStart, Math.min(end, length)), start + runStart)
            runStart = -1
          }
          for (let offset = 0; offset < length; offset += SPARSE_PIECE) {
            const piece = data.subarray(offset, offset + SPARSE_PIECE)
            const zero = knownZero(offset / SPARSE_PIECE) || isAllZero(piece)
            if (zero) await flush(offset)
            else if (runStart < 0) runStart = offset
          }
          await flush(length)
        },
      )
    },
    {
      tag: 'convert',
      doing: 'write',
      operation: 'convert',
      ...(options.signal ? { signal: options.signal } : {}),
    },
  )
}

/** The raw driver. */
export const rawDriver: FormatDriver = {
  ...RAW_FORMAT,
  open: (path: string, options: OpenOptions) => RawDisk.open(path, options.readOnly),
  create: createRaw,
  convertInto: convertIntoRaw,
  // A raw file is as long as its virtual size, whatever it holds (qemu-img measure -O raw).
  measure: (input) => Promise.resolve({ required: input.size, 'fully-allocated': input.size }),
}
