import { wholeViewFile, type Disk, type DiskAbility, type OperationOptions } from '../disk'
import { BlockFile } from '../file'
import { realPath } from '../fs'
import { copyRange, dataExtentsIn, punchOrZero } from '../formats/common/sparse'
import type { Library } from '../library'
import type { NamePolicy } from '../names'
import { runOverlayJob } from './job'
import { EarlyWriteback } from './writeback'

/** Bytes copied per read and write when the copy goes through the layers' drivers. */
const COPY_BYTES = 16 * 1024 * 1024
/** Data copied between two flushes (each flush makes the bits set so far durable). */
const FLUSH_BYTES = 256 * 1024 * 1024
/** Bytes copied between two early syncs of the image file (see EarlyWriteback). */
const WRITEBACK_BYTES = 32 * 1024 * 1024

/** What stream needs of an overlay's format (the live flatten needs the same). */
export const STREAM_NEEDS: readonly DiskAbility[] = [
  'dataFile',
  'forEachAllocationRun',
  'markAllocated',
  'isAllAllocated',
  'setAllAllocated',
]

/** What `addcow stream` needs. */
export interface StreamOptions extends OperationOptions {
  overlay: string
  /** For the drift guard; without it the base's fingerprint is not checked. */
  library?: Library
  /** Stream even though the base changed since its fingerprint was recorded. */
  acceptBase?: boolean
  policy?: NamePolicy
}

/** What a stream did. */
export interface StreamResult {
  overlay: string
  /** Clusters newly marked, bytes copied from the chain, bytes that were zeros (not written). */
  clusters: number
  copiedBytes: number
  zeroBytes: number
  /** ALL_ALLOCATED was already set: nothing to do. */
  alreadyDone: boolean
}

/**
 * Copies of the layers below an overlay into its image file, cluster range by cluster range:
 * data is copied (in the kernel when the layer below is a raw file), zeros are not written,
 * and the image file is made to read zeros where it held stale bytes.
 */
export class BelowCopier {
  private rawSource: BlockFile | null = null

  private constructor(
    private readonly disk: Disk,
    private readonly image: BlockFile,
  ) {}

  /**
   * Prepare to copy what lies below `disk` into its data file. When the layer below is one
   * plain file ({@link wholeViewFile}: a raw base, a flattened add-cow base), its data
   * extents are copied in the kernel.
   */
  static async open(disk: Disk & Required<Pick<Disk, 'dataFile'>>): Promise<BelowCopier> {
    const copier = new BelowCopier(disk, disk.dataFile())
    const plain = disk.backing ? wholeViewFile(disk.backing) : null
    if (plain) copier.rawSource = await BlockFile.open(plain.path, false)
    return copier
  }

  /** Copy the guest view below the overlay for bytes [start, end); returns bytes copied and zero. */
  async copy(start: number, end: number): Promise<{ copied: number; zero: number }> {
    const backing = this.disk.backing
    const available = backing ? Math.min(end, backing.size) : start
    const data: [number, number][] = []
    if (backing && available > start) {
      if (this.rawSource) {
        data.push(
          ...((await dataExtentsIn(this.rawSource, start, available)) ?? [[start, available]]),
        )
      } else if (backing.capabilities.blockStatus) {
        for (const extent of await backing.blockStatus(start, available - start)) {
          if (!extent.zero) data.push([extent.offset, extent.offset + extent.length])
        }
      } else {
        data.push([start, available])
      }
    }
    let copied = 0
    let cursor = start
    for (const [from, to] of data) {
      if (from > cursor) await this.zero(cursor, from)
      await this.copyData(from, to)
      copied += to - from
      cursor = to
    }
    if (cursor < end) await this.zero(cursor, end)
    return { copied, zero: end - start - copied }
  }

  private async copyData(from: number, to: number): Promise<void> {
    const image = this.image
    if (this.rawSource) {
      await copyRange(this.rawSource, from, image, from, to - from)
      return
    }
    const backing = this.disk.backing
    if (!backing) return
    const buffer = Buffer.allocUnsafe(Math.min(COPY_BYTES, to - from))
    for (let position = from; position < to; position += buffer.length) {
      const piece = buffer.subarray(0, Math.min(buffer.length, to - position))
      await backing.readInto(piece, position)
      await image.writeAt(piece, position)
    }
  }

  /** Make [from, to) of the image file read zeros, writing only where it holds data. */
  private async zero(from: number, to: number): Promise<void> {
    const image = this.image
    const extents = await dataExtentsIn(image, from, to)
    if (extents) {
      for (const [a, b] of extents) await punchOrZero(image, a, b - a)
      return
    }
    const buffer = Buffer.allocUnsafe(Math.min(COPY_BYTES, to - from))
    for (let position = from; position < to; position += buffer.length) {
      const piece = buffer.subarray(0, Math.min(buffer.length, to - position))
      await image.readAt(piece, position)
      if (piece.some((byte) => byte !== 0)) await punchOrZero(image, position, piece.length)
    }
  }

  async close(): Promise<void> {
    await this.rawSource?.close()
  }
}

/**
 * `stream` (flatten): copy every cluster the overlay still reads from its chain into its image
 * file, mark it as it lands, and finally set ALL_ALLOCATED, so the image file alone becomes a
 * complete raw disk with the overlay's guest view.
 *
 * On disk: image-file data first; bits in memory; every {@link FLUSH_BYTES} a flush (image file
 * synced, then bitmap written and synced); at the end ALL_ALLOCATED after the full bitmap. A
 * crash or cancel leaves a valid overlay whose durable bits all point at copied data; running
 * stream again copies only what is still unmarked.
 */
export async function streamOverlay(options: StreamOptions): Promise<StreamResult> {
  return runOverlayJob(
    'stream',
    {
      ...options,
      path: options.overlay,
      needs: STREAM_NEEDS,
      ...(options.library
        ? {
            drift: {
              library: options.library,
              accept: options.acceptBase ?? false,
              doing: 'stream from it',
            },
          }
        : {}),
    },
    async (job) => {
      const disk = job.disk as Disk & Required<Pick<Disk, (typeof STREAM_NEEDS)[number]>>
      const result: StreamResult = {
        overlay: await realPath(disk.path),
        clusters: 0,
        copiedBytes: 0,
        zeroBytes: 0,
        alreadyDone: false,
      }
      if (disk.isAllAllocated()) return { ...result, alreadyDone: true }
      await job.lockChain()
      const copier = job.adopt(await BelowCopier.open(disk))
      const writeback = job.adopt(await EarlyWriteback.open(disk.dataFile().path, WRITEBACK_BYTES))
      const flush = (): Promise<void> => writeback.durably(() => disk.flush())
      const walked = await job.walk(
        { select: 'unallocated', flush: { every: FLUSH_BYTES, flush } },
        async (runs) => {
          let copiedHere = 0
          for (const run of runs) {
            const { copied, zero } = await copier.copy(run.start, run.end)
            disk.markAllocated(run.first, run.stop)
            result.copiedBytes += copied
            result.zeroBytes += zero
            copiedHere += copied
          }
          writeback.wrote(copiedHere)
          return copiedHere
        },
      )
      result.clusters = walked.units
      // Flushes the bitmap first: ALL_ALLOCATED is written only after the full bitmap.
      await writeback.durably(() => disk.setAllAllocated())
      options.onProgress?.(walked.bytes, walked.bytes)
      return result
    },
  )
}
