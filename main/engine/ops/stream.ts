import type { Disk, OperationOptions } from '../disk'
import { EngineError, throwIfAborted } from '../errors'
import { BlockFile } from '../file'
import { realPath } from '../fs'
import { AddCowDisk } from '../formats/add-cow/add-cow-disk'
import { FEATURE_ALL_ALLOCATED } from '../formats/add-cow/header'
import type { Library } from '../library'
import type { NamePolicy } from '../names'
import { openImage } from '../open'
import { writeCompatibleFeatures } from './add-cow-edit'
import { assertBaseUnchanged, checkBaseDrift } from './drift'
import { lockFiles, type LockMode } from './lock'
import { copyRange, dataExtentsIn, punchOrZero } from '../formats/common/sparse'

/** Bytes of clusters looked at per step. */
const WINDOW_BYTES = 16 * 1024 * 1024
/** Data copied between two flushes (each flush makes the bits set so far durable). */
const FLUSH_BYTES = 256 * 1024 * 1024

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

/** The files of every layer below `disk` (to lock them against writers while reading). */
function chainFiles(disk: Disk): string[] {
  const files: string[] = []
  for (let layer = disk.backing; layer; layer = layer.backing) {
    files.push(layer.path)
    if (layer instanceof AddCowDisk) files.push(layer.imageFile.path)
  }
  return files
}

/**
 * Copies of the layers below an overlay into its image file, cluster range by cluster range:
 * data is copied (in the kernel when the layer below is a raw file), zeros are not written,
 * and the image file is made to read zeros where it held stale bytes.
 */
export class BelowCopier {
  private rawSource: BlockFile | null = null

  private constructor(private readonly disk: AddCowDisk) {}

  /** Prepare to copy what lies below `disk`. */
  static async open(disk: AddCowDisk): Promise<BelowCopier> {
    const copier = new BelowCopier(disk)
    if (disk.backing?.format === 'raw')
      copier.rawSource = await BlockFile.open(disk.backing.path, false)
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
    const image = this.disk.imageFile
    if (this.rawSource) {
      await copyRange(this.rawSource, from, image, from, to - from)
      return
    }
    const backing = this.disk.backing
    if (!backing) return
    const buffer = Buffer.allocUnsafe(Math.min(WINDOW_BYTES, to - from))
    for (let position = from; position < to; position += buffer.length) {
      const piece = buffer.subarray(0, Math.min(buffer.length, to - position))
      await backing.readInto(piece, position)
      await image.writeAt(piece, position)
    }
  }

  /** Make [from, to) of the image file read zeros, writing only where it holds data. */
  private async zero(from: number, to: number): Promise<void> {
    const image = this.disk.imageFile
    const extents = await dataExtentsIn(image, from, to)
    if (extents) {
      for (const [a, b] of extents) await punchOrZero(image, a, b - a)
      return
    }
    const buffer = Buffer.allocUnsafe(Math.min(WINDOW_BYTES, to - from))
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

/** Lock requests for an operation that writes `disk` and reads its chain. */
export async function overlayLockRequests(
  disk: AddCowDisk,
): Promise<{ path: string; mode: LockMode }[]> {
  const requests: { path: string; mode: LockMode }[] = [
    { path: await realPath(disk.path), mode: 'exclusive' },
    { path: await realPath(disk.imageFile.path), mode: 'exclusive' },
  ]
  for (const path of chainFiles(disk)) requests.push({ path: await realPath(path), mode: 'shared' })
  return requests
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
  const disk = await openImage(options.overlay, {
    readOnly: false,
    ...(options.policy ? { policy: options.policy } : {}),
  })
  let release: (() => Promise<void>) | null = null
  let copier: BelowCopier | null = null
  try {
    if (!(disk instanceof AddCowDisk)) {
      throw new EngineError(
        'NOT_CAPABLE',
        `${disk.path} is a ${disk.format} image; stream works on add-cow overlays.`,
        {
          path: disk.path,
          field: 'format',
          value: disk.format,
        },
      )
    }
    const result: StreamResult = {
      overlay: await realPath(disk.path),
      clusters: 0,
      copiedBytes: 0,
      zeroBytes: 0,
      alreadyDone: false,
    }
    if (disk.allAllocated) return { ...result, alreadyDone: true }
    if (options.library) {
      const drift = await checkBaseDrift(disk, options.library, options)
      assertBaseUnchanged(drift, { force: options.acceptBase ?? false, doing: 'stream from it' })
    }
    release = (await lockFiles(await overlayLockRequests(disk), 'stream')).release
    copier = await BelowCopier.open(disk)
    const clusterSize = disk.clusterSize
    const clusters = disk.geometry.clusters
    const perWindow = Math.max(1, Math.floor(WINDOW_BYTES / clusterSize))
    const total = (clusters - disk.allocatedClusters) * clusterSize
    let done = 0
    let sinceFlush = 0
    for (let first = 0; first < clusters; first += perWindow) {
      if (options.signal?.aborted) {
        await disk.flush()
        throwIfAborted(options.signal, 'stream')
      }
      const runs: [number, number][] = []
      disk.forEachAllocationRun(
        first,
        Math.min(clusters, first + perWindow),
        (start, stop, allocated) => {
          if (!allocated) runs.push([start, stop])
        },
      )
      for (const [start, stop] of runs) {
        const from = start * clusterSize
        const to = Math.min(stop * clusterSize, disk.size)
        const { copied, zero } = await copier.copy(from, to)
        disk.markAllocated(start, stop)
        result.clusters += stop - start
        result.copiedBytes += copied
        result.zeroBytes += zero
        done += (stop - start) * clusterSize
        sinceFlush += copied
      }
      if (sinceFlush >= FLUSH_BYTES) {
        await disk.flush()
        sinceFlush = 0
      }
      if (runs.length > 0) options.onProgress?.(Math.min(done, total), total)
    }
    await disk.flush()
    if ((disk.header.compatibleFeatures & FEATURE_ALL_ALLOCATED) === 0n) {
      // The bitmap was already full before this run (the driver sets the flag only on the
      // change to full): set ALL_ALLOCATED now, after the full bitmap is durable.
      disk.header.compatibleFeatures |= FEATURE_ALL_ALLOCATED
      await writeCompatibleFeatures(disk.metadataFile, disk.header.compatibleFeatures)
    }
    options.onProgress?.(total, total)
    return result
  } finally {
    await copier?.close().catch(() => undefined)
    await disk.close().catch(() => undefined)
    await release?.()
  }
}
