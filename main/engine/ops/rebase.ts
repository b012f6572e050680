import type { Disk, OperationOptions } from '../disk'
import { EngineError, throwIfAborted } from '../errors'
import { BlockFile } from '../file'
import { pathExists, realPath } from '../fs'
import { AddCowDisk } from '../formats/add-cow/add-cow-disk'
import { parseHeader, type AddCowHeader } from '../formats/add-cow/header'
import type { Library } from '../library'
import { judgeName, resolveName, STRICT_POLICY, type NamePolicy } from '../names'
import { chainOf, openImage, probeFormat } from '../open'
import { rewriteHeader } from './add-cow-edit'
import { assertBaseUnchanged, checkBaseDrift, fingerprintBase } from './drift'
import { lockFiles } from './lock'
import { overlayLockRequests } from './stream'

/** Bytes compared per step. */
const STEP_BYTES = 4 * 1024 * 1024
/** Data copied between two flushes. */
const FLUSH_BYTES = 256 * 1024 * 1024
/** Largest header read (header_size is at most 2 MiB). */
const MAX_HEADER = 2 * 1024 * 1024

/** What `addcow rebase` needs. */
export interface RebaseOptions extends OperationOptions {
  overlay: string
  /** The new backing name, stored as given (relative to the overlay's folder); '' detaches. */
  backing: string
  /** Format of the new base; probed from it when absent (the user named it). */
  backingFormat?: string
  /** Rewrite the name only (-u): no data is compared or copied. */
  unsafe?: boolean
  /** Go on although the old base changed since its fingerprint was recorded. */
  acceptBase?: boolean
  library: Library
  policy?: NamePolicy
}

/** What a rebase did. */
export interface RebaseResult {
  overlay: string
  oldBacking: string | null
  newBacking: string | null
  /** Resolved path and format of the new base (null when detached). */
  newBackingPath: string | null
  newBackingFormat: string | null
  /** Clusters copied into the overlay because the old and new base differ there. */
  copiedClusters: number
  comparedBytes: number
  unsafe: boolean
  /** Pairs (real paths) the library should trust: the user named the new base. */
  trust: { from: string; to: string }[]
}

/** Read and validate the header of the add-cow file at `path`. */
export async function readAddCowHeader(path: string): Promise<AddCowHeader> {
  const file = await BlockFile.open(path, false)
  try {
    const head = Buffer.alloc(Math.min(await file.length(), MAX_HEADER))
    await file.readAt(head, 0)
    return parseHeader(head, path).header
  } finally {
    await file.close()
  }
}

/** Read [offset, offset + target.length) of a disk's guest view, zeros past its end or without one. */
async function readView(disk: Disk | null, target: Buffer, offset: number): Promise<void> {
  const available = disk ? Math.max(0, Math.min(target.length, disk.size - offset)) : 0
  if (disk && available > 0) await disk.readInto(target.subarray(0, available), offset)
  target.fill(0, available)
}

async function isZeroView(disk: Disk | null, offset: number, length: number): Promise<boolean> {
  if (!disk || offset >= disk.size) return true
  if (!disk.capabilities.blockStatus) return false
  const inside = Math.min(length, disk.size - offset)
  return (await disk.blockStatus(offset, inside)).every((extent) => extent.zero)
}

/**
 * `rebase`: point an add-cow overlay at another base.
 *
 * Safe mode compares the old and the new base's guest views under every cluster the overlay
 * does not hold, copies the old content of each cluster that differs into the image file (and
 * marks it), and only then rewrites the header, so the guest view never changes. `unsafe` (-u)
 * rewrites the names only. Either way the header is rebuilt byte-exact (backing name at 76,
 * image name right after it) in a copy that is synced and renamed over the add-cow file.
 * A crash before the rename leaves the old base named and the copied clusters marked: running
 * rebase again compares only what is still unmarked.
 */
export async function rebaseOverlay(options: RebaseOptions): Promise<RebaseResult> {
  const overlayPath = await realPath(options.overlay)
  const header = await readAddCowHeader(overlayPath)
  const detach = options.backing === ''
  let newPath: string | null = null
  let newFormat: string | null = null
  if (!detach) {
    const verdict = await judgeName(
      overlayPath,
      options.backing,
      options.backingFormat ?? null,
      STRICT_POLICY,
    )
    if (
      verdict.reason === 'protocol' ||
      verdict.reason === 'json' ||
      verdict.reason === 'device' ||
      verdict.reason === 'not-regular-file'
    ) {
      throw new EngineError(
        'REFUSED_NAME',
        `The new base '${options.backing}' of ${overlayPath} cannot be used: ${verdict.reason} names are never followed.`,
        {
          path: overlayPath,
          field: 'backing name',
          value: options.backing,
        },
      )
    }
    newPath = resolveName(overlayPath, options.backing)
    if (verdict.reason === 'missing' && (!options.unsafe || !options.backingFormat)) {
      throw new EngineError(
        'MISSING_FILE',
        `The new base ${newPath} does not exist${options.unsafe ? ' (with -u, give its format with -F)' : ''}.`,
        {
          path: newPath,
          field: 'backing name',
          value: options.backing,
        },
      )
    }
    newFormat = options.backingFormat ?? (await probeFormat(newPath))
    const imageReal = await realPath(resolveName(overlayPath, header.imageName))
    const newReal = await realPath(newPath)
    if (newReal === overlayPath || newReal === imageReal) {
      throw new EngineError(
        'SAME_FILE',
        `${newPath} is the overlay ${overlayPath} or its image file; it cannot be its base.`,
        {
          path: overlayPath,
          field: 'backing name',
          value: options.backing,
        },
      )
    }
  }
  const result: RebaseResult = {
    overlay: overlayPath,
    oldBacking: header.backingName,
    newBacking: detach ? null : options.backing,
    newBackingPath: newPath,
    newBackingFormat: newFormat,
    copiedClusters: 0,
    comparedBytes: 0,
    unsafe: options.unsafe ?? false,
    trust: newPath ? [{ from: overlayPath, to: await realPath(newPath) }] : [],
  }
  const policy = options.policy ?? STRICT_POLICY
  // The user named the new base: its own chain still follows the policy.
  const newBase =
    newPath && newFormat && !(options.unsafe && !(await pathExists(newPath)))
      ? await openImage(newPath, { format: newFormat, readOnly: true, policy })
      : null
  let release: (() => Promise<void>) | null = null
  try {
    if (newBase) {
      for (const layer of chainOf(newBase)) {
        const files = [layer.path, ...(layer instanceof AddCowDisk ? [layer.imageFile.path] : [])]
        for (const file of files) {
          if ((await realPath(file)) === overlayPath) {
            throw new EngineError(
              'CHAIN_LOOP',
              `The new base ${newPath} of ${overlayPath} is built on the overlay itself; the chain would loop.`,
              {
                path: overlayPath,
                field: 'backing name',
                value: options.backing,
              },
            )
          }
        }
      }
    }
    if (options.unsafe) {
      release = (await lockFiles([{ path: overlayPath, mode: 'exclusive' }], 'rebase')).release
    } else {
      await copyDifferences(overlayPath, newBase, options, result, (next) => (release = next))
    }
    throwIfAborted(options.signal, 'rebase')
    const current = await readAddCowHeader(overlayPath)
    await rewriteHeader(
      overlayPath,
      {
        ...current,
        backingName: detach ? null : options.backing,
        backingFormat: detach ? null : newFormat,
      },
      options.signal,
    )
    if (newBase)
      await options.library.recordBaseFingerprint(await fingerprintBase(overlayPath, newBase))
    return result
  } finally {
    await newBase?.close().catch(() => undefined)
    await (release as (() => Promise<void>) | null)?.()
  }
}

/** Safe mode: copy into the overlay every unmarked cluster whose old and new base content differ. */
async function copyDifferences(
  overlayPath: string,
  newBase: Disk | null,
  options: RebaseOptions,
  result: RebaseResult,
  holdLocks: (release: () => Promise<void>) => void,
): Promise<void> {
  const disk = await openImage(overlayPath, {
    readOnly: false,
    format: 'add-cow',
    ...(options.policy ? { policy: options.policy } : {}),
  })
  try {
    if (!(disk instanceof AddCowDisk))
      throw new EngineError('INTERNAL', `${overlayPath} did not open as add-cow.`, {
        path: overlayPath,
      })
    const drift = await checkBaseDrift(disk, options.library, options)
    assertBaseUnchanged(drift, { force: options.acceptBase ?? false, doing: 'rebase it' })
    const requests = await overlayLockRequests(disk)
    if (newBase)
      for (const layer of chainOf(newBase))
        requests.push({ path: await realPath(layer.path), mode: 'shared' })
    const { release } = await lockFiles(requests, 'rebase')
    holdLocks(release)
    if (disk.allAllocated) return
    const old = disk.backing
    const clusterSize = disk.clusterSize
    const clusters = disk.geometry.clusters
    const perStep = Math.max(1, Math.floor(STEP_BYTES / clusterSize))
    const oldBuffer = Buffer.allocUnsafe(perStep * clusterSize)
    const newBuffer = Buffer.allocUnsafe(perStep * clusterSize)
    const total = (clusters - disk.allocatedClusters) * clusterSize
    let sinceFlush = 0
    for (let first = 0; first < clusters; first += perStep) {
      if (options.signal?.aborted) {
        await disk.flush()
        throwIfAborted(options.signal, 'rebase')
      }
      const runs: [number, number][] = []
      disk.forEachAllocationRun(
        first,
        Math.min(clusters, first + perStep),
        (start, stop, allocated) => {
          if (!allocated) runs.push([start, stop])
        },
      )
      for (const [start, stop] of runs) {
        const from = start * clusterSize
        const to = Math.min(stop * clusterSize, disk.size)
        result.comparedBytes += to - from
        if (
          (await isZeroView(old, from, to - from)) &&
          (await isZeroView(newBase, from, to - from))
        )
          continue
        const oldPiece = oldBuffer.subarray(0, to - from)
        const newPiece = newBuffer.subarray(0, to - from)
        await Promise.all([readView(old, oldPiece, from), readView(newBase, newPiece, from)])
        // Copy each maximal run of differing clusters in one write.
        let runStart = -1
        for (let cluster = start; cluster <= stop; cluster++) {
          const a = (cluster - start) * clusterSize
          const b = Math.min(a + clusterSize, to - from)
          const differs = cluster < stop && !oldPiece.subarray(a, b).equals(newPiece.subarray(a, b))
          if (differs && runStart < 0) runStart = cluster
          if (!differs && runStart >= 0) {
            const offset = (runStart - start) * clusterSize
            await disk.imageFile.writeAt(oldPiece.subarray(offset, a), from + offset)
            disk.markAllocated(runStart, cluster)
            result.copiedClusters += cluster - runStart
            sinceFlush += a - offset
            runStart = -1
          }
        }
      }
      if (sinceFlush >= FLUSH_BYTES) {
        await disk.flush()
        sinceFlush = 0
      }
      if (runs.length > 0) options.onProgress?.(Math.min(result.comparedBytes, total), total)
    }
    await disk.flush()
  } finally {
    await disk.close()
  }
}
