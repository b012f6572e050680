import { randomBytes } from 'node:crypto'
import { link, lstat, open as openFile, realpath, rename, rm } from 'node:fs/promises'
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path'
import type { OperationOptions } from '../disk'
import { EngineError, throwIfAborted, wrapIoError } from '../errors'
import { BlockFile } from '../file'
import { MAX_BITMAP_BYTES } from '../formats/add-cow/add-cow-disk'
import { encodeHeader, FEATURE_ALL_ALLOCATED, geometry } from '../formats/add-cow/header'
import { DraftDisk } from '../formats/add-cow-drafts/draft-disk'
import type { DraftLayout } from '../formats/add-cow-drafts/layouts'
import { STRICT_POLICY, resolveName, type NamePolicy } from '../names'
import { openImage, probeFormat } from '../open'
import { clusterBitsOf } from './create'

/** The draft layouts `upgradeDraft` reads. */
export const DRAFT_LAYOUTS: readonly DraftLayout[] = [
  'add-cow-v18',
  'add-cow-v12',
  'add-cow-v7',
  'add-cow-v3',
]

/** Clusters examined between two progress reports and cancellation checks. */
const STEP_CLUSTERS = 4096
/** Default cluster size when the draft's unit is not a valid current cluster size. */
const DEFAULT_CLUSTER_SIZE = 65536

/** What `addcow amend --upgrade` needs. */
export interface UpgradeOptions extends OperationOptions {
  /** The add-cow file in a draft layout. */
  path: string
  /** Write the upgraded file here (must not exist) instead of replacing `path`. */
  output?: string
  /** Cluster size of the new file; default: the draft's, or 64 KiB where that is below 4 KiB. */
  clusterSize?: number
  /** In place: keep the draft file as `path + '.old'`. */
  keepOld?: boolean
  /** The draft layout, when known (otherwise probed). */
  format?: string
  /** Policy for the names the draft stores (its image and backing files). */
  policy?: NamePolicy
}

/** What the upgrade did. */
export interface UpgradeResult {
  /** The new add-cow file (current layout). */
  path: string
  layout: DraftLayout
  clusterSize: number
  size: number
  /** Clusters whose draft allocation was partial and were completed from the backing chain. */
  filledClusters: number
  /** The kept draft file, or null. */
  backup: string | null
  /** Pairs (real paths) the library should trust: the draft's names were followed under the policy. */
  trust: { from: string; to: string }[]
}

async function exists(path: string): Promise<boolean> {
  try {
    await lstat(path)
    return true
  } catch {
    return false
  }
}

/** A stored name re-expressed for a file in `newFolder` (relative names stay relative). */
function restate(
  stored: string,
  resolvedPath: string,
  oldFolder: string,
  newFolder: string,
): string {
  if (isAbsolute(stored) || oldFolder === newFolder) return stored
  return relative(newFolder, resolvedPath)
}

async function syncFolder(folder: string): Promise<void> {
  const handle = await openFile(folder, 'r').catch(() => null)
  if (!handle) return
  try {
    await handle.sync()
  } catch {
    // Some file systems cannot sync a folder; the rename is still ordered after the data sync.
  } finally {
    await handle.close()
  }
}

/**
 * Upgrade an add-cow file in an earlier draft layout (V18, V12, v7, v3) to the current layout,
 * keeping the guest view identical.
 *
 * Where the new cluster is larger than the draft's unit (v3/v7 sectors, small V18 clusters), a
 * cluster whose units are partly allocated is completed: its unallocated units are copied from
 * the backing chain (zeros past its end) into the image file, then the cluster is marked
 * allocated. Those ranges read from the backing file in the draft, so the draft's own view is
 * unchanged and stays valid until the switch. A v3 image file shorter than the recorded size is
 * grown sparsely; a longer one is refused (the current layout takes the size from the file).
 *
 * The new file is written under a temporary name beside its destination and synced; then it is
 * renamed over the draft (in place; with `keepOld` the draft is first hard-linked to
 * `path.old`) or linked to `output`. An error or a cancel before that point removes the
 * temporary file and leaves the draft as it was.
 */
export async function upgradeDraft(options: UpgradeOptions): Promise<UpgradeResult> {
  const path = resolve(options.path)
  const format = options.format ?? (await probeFormat(path))
  if (!(DRAFT_LAYOUTS as readonly string[]).includes(format)) {
    throw new EngineError(
      'BAD_ARGUMENT',
      format === 'add-cow'
        ? `${path} already uses the current add-cow layout; there is nothing to upgrade.`
        : `${path} is a ${format} file, not an earlier add-cow draft; only ${DRAFT_LAYOUTS.join(', ')} can be upgraded.`,
      { path, field: 'format', value: format },
    )
  }
  const target = options.output === undefined ? path : resolve(options.output)
  const inPlace = target === path
  const backup = inPlace && options.keepOld ? `${path}.old` : null
  if (!inPlace && (await exists(target))) {
    throw new EngineError('ALREADY_EXISTS', `${target} already exists; refusing to overwrite it.`, {
      path: target,
    })
  }
  if (backup !== null && (await exists(backup))) {
    throw new EngineError(
      'ALREADY_EXISTS',
      `${backup} already exists; move it away to keep the old file there.`,
      {
        path: backup,
      },
    )
  }

  const disk = await openImage(path, {
    format,
    readOnly: true,
    policy: options.policy ?? STRICT_POLICY,
  })
  const temporary = join(
    dirname(target),
    `.${basename(target)}.${randomBytes(6).toString('hex')}.upgrading`,
  )
  try {
    if (!(disk instanceof DraftDisk)) {
      throw new EngineError('INTERNAL', `${path} did not open as an add-cow draft.`, { path })
    }
    const { header } = disk.draft
    const size = disk.size
    const clusterSize =
      options.clusterSize ??
      (header.unit >= 4096 && header.unit <= 2 * 1024 * 1024 ? header.unit : DEFAULT_CLUSTER_SIZE)
    const clusterBits = clusterBitsOf(clusterSize)
    const shape = geometry(clusterBits, size)
    if (shape.bitmapBytes > MAX_BITMAP_BYTES) {
      throw new EngineError(
        'SIZE_LIMIT',
        `${path} (${size} bytes) would need a ${shape.bitmapBytes}-byte bitmap at ${clusterSize}-byte clusters; choose larger clusters.`,
        { path, field: 'cluster size', value: clusterSize },
      )
    }

    // The image file: the current layout takes the virtual size from its length.
    const image = await BlockFile.open(disk.draft.imagePath, true)
    let filledClusters = 0
    const bitmap = Buffer.alloc(shape.bitmapArea)
    try {
      const imageLength = await image.length()
      if (imageLength > size) {
        throw new EngineError(
          'NOT_CAPABLE',
          `The image file ${disk.draft.imagePath} is ${imageLength} bytes, longer than the ${size}-byte virtual size ${path} records; the current layout would show ${imageLength} bytes.`,
          { path, field: 'size', value: size },
        )
      }
      if (header.allAllocated) {
        for (let cluster = 0; cluster < shape.clusters; cluster++)
          bitmap[cluster >>> 3]! |= 1 << (cluster & 7)
      } else {
        filledClusters = await convertBitmap(
          disk,
          image,
          bitmap,
          clusterSize,
          shape.clusters,
          options,
        )
      }
      if (imageLength < size) await image.truncate(size)
      await image.sync()
    } finally {
      await image.close()
    }
    throwIfAborted(options.signal, 'upgrade')

    const oldFolder = dirname(path)
    const newFolder = dirname(target)
    const backingName =
      header.backingName === null
        ? null
        : restate(header.backingName, resolveName(path, header.backingName), oldFolder, newFolder)
    if (header.backingName !== null && disk.draft.backingFormat === null) {
      throw new EngineError('INTERNAL', `The backing format of ${path} could not be decided.`, {
        path,
      })
    }
    const encoded = encodeHeader(
      {
        clusterBits,
        incompatibleFeatures: 0n,
        compatibleFeatures: header.allAllocated ? FEATURE_ALL_ALLOCATED : 0n,
        headerSize: 0,
        backingName,
        backingFormat: disk.draft.backingFormat,
        imageName: restate(header.imageName, disk.draft.imagePath, oldFolder, newFolder),
        imageFormat: 'raw',
      },
      target,
    )
    const meta = await BlockFile.create(temporary, true)
    try {
      await meta.truncate(shape.fileLength)
      await meta.writeAt(encoded, 0)
      await meta.writeAt(bitmap.subarray(0, shape.bitmapBytes), encoded.length)
      await meta.sync()
    } finally {
      await meta.close()
    }
    throwIfAborted(options.signal, 'upgrade')

    if (inPlace) {
      if (backup !== null) {
        try {
          await link(path, backup)
        } catch (error) {
          throw wrapIoError(error, backup, 'keep the old file as')
        }
      }
      await rename(temporary, path)
    } else {
      try {
        await link(temporary, target)
      } catch (error) {
        throw wrapIoError(error, target, 'create')
      }
      await rm(temporary, { force: true })
    }
    await syncFolder(newFolder)

    const trust: { from: string; to: string }[] = []
    const realTarget = await realpath(target)
    for (const name of disk.draft.names) {
      if (name.followed) trust.push({ from: realTarget, to: await realpath(name.resolved) })
    }
    return { path: target, layout: header.layout, clusterSize, size, filledClusters, backup, trust }
  } catch (error) {
    await rm(temporary, { force: true })
    throw error
  } finally {
    await disk.close()
  }
}

/**
 * Fill `bitmap` (current layout) from the draft's allocation. A new cluster is allocated when
 * any of its draft units is; its unallocated units are first copied from below into the image
 * file. Returns the number of clusters completed that way.
 */
async function convertBitmap(
  disk: DraftDisk,
  image: BlockFile,
  bitmap: Buffer,
  clusterSize: number,
  clusters: number,
  options: OperationOptions,
): Promise<number> {
  const unit = disk.allocationUnit
  const size = disk.size
  let filled = 0
  for (let cluster = 0; cluster < clusters; cluster++) {
    if (cluster % STEP_CLUSTERS === 0) {
      throwIfAborted(options.signal, 'upgrade')
      options.onProgress?.(cluster, clusters)
    }
    const start = cluster * clusterSize
    const end = Math.min(start + clusterSize, size)
    const first = Math.floor(start / unit)
    const last = Math.floor((end - 1) / unit)
    let any = false
    let all = true
    for (let index = first; index <= last; index++) {
      if (disk.isAllocated(index)) any = true
      else all = false
    }
    if (!any) continue
    bitmap[cluster >>> 3]! |= 1 << (cluster & 7)
    if (all) continue
    filled++
    for (let index = first; index <= last; index++) {
      if (disk.isAllocated(index)) continue
      let stop = index
      while (stop + 1 <= last && !disk.isAllocated(stop + 1)) stop++
      const from = Math.max(index * unit, start)
      const to = Math.min((stop + 1) * unit, end)
      const data = Buffer.alloc(to - from)
      await readBelow(disk, data, from)
      await image.writeAt(data, from)
      index = stop
    }
  }
  options.onProgress?.(clusters, clusters)
  return filled
}

/** What lies under the draft at `offset`: its backing disk, zeros past its end or without one. */
async function readBelow(disk: DraftDisk, target: Buffer, offset: number): Promise<void> {
  const backing = disk.backing
  const available = backing ? Math.max(0, Math.min(target.length, backing.size - offset)) : 0
  if (available > 0 && backing) await backing.readInto(target.subarray(0, available), offset)
}
