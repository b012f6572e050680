import { link } from 'node:fs/promises'
import { dirname, isAbsolute, relative, resolve } from 'node:path'
import type { Disk, DiskAbility, OperationOptions } from '../disk'
import { EngineError, wrapIoError } from '../errors'
import { readBelow } from '../extents'
import { BlockFile } from '../file'
import { pathExists, realPath, replaceFile } from '../fs'
import { clusterBitsOf, encodeAddCowFile, writeAddCowFile } from '../formats/add-cow/create'
import { geometry, MAX_BITMAP_BYTES } from '../formats/add-cow/header'
import { STRICT_POLICY, resolveName, type NamePolicy } from '../names'
import { probeFormat } from '../open'
import { findFormat, listFormats } from '../registry'
import { runOverlayJob } from './job'

/** The earlier layouts `upgradeDraft` reads: every format whose driver names what supersedes it. */
export const DRAFT_LAYOUTS: readonly string[] = listFormats()
  .filter((driver) => driver.upgradesTo !== undefined)
  .map((driver) => driver.name)

/** Default cluster size when the draft's unit is not a valid current cluster size. */
const DEFAULT_CLUSTER_SIZE = 65536

/** What upgrade needs of a draft's format (its data file at guest offsets, its allocation). */
const UPGRADE_NEEDS: readonly DiskAbility[] = [
  'dataFile',
  'forEachAllocationRun',
  'isAllAllocated',
  'backingLink',
]
type Draft = Disk & Required<Pick<Disk, (typeof UPGRADE_NEEDS)[number]>>

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
  layout: string
  clusterSize: number
  size: number
  /** Clusters whose draft allocation was partial and were completed from the backing chain. */
  filledClusters: number
  /** The kept draft file, or null. */
  backup: string | null
  /** Pairs (real paths) the library should trust: the draft's names were followed under the policy. */
  trust: { from: string; to: string }[]
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
 * A job (main/engine/ops/job.ts): the draft's files are locked exclusively, its chain shared;
 * the walk goes over the new clusters that hold data. The new file is written under a
 * temporary name beside its destination and synced; then it is renamed over the draft (in
 * place; with `keepOld` the draft is first hard-linked to `path.old`) or linked to `output`. An
 * error or a cancel before that point removes the temporary file and leaves the draft as it
 * was.
 */
export async function upgradeDraft(options: UpgradeOptions): Promise<UpgradeResult> {
  const path = resolve(options.path)
  const format = options.format ?? (await probeFormat(path))
  if (findFormat(format)?.upgradesTo === undefined) {
    const current = listFormats().some((driver) => driver.upgradesTo === format)
    throw new EngineError(
      'BAD_ARGUMENT',
      current
        ? `${path} already uses the current ${format} layout; there is nothing to upgrade.`
        : `${path} is a ${format} file, not an earlier add-cow draft; only ${DRAFT_LAYOUTS.join(', ')} can be upgraded.`,
      { path, field: 'format', value: format },
    )
  }
  const target = options.output === undefined ? path : resolve(options.output)
  const inPlace = target === path
  const backup = inPlace && options.keepOld ? `${path}.old` : null
  if (!inPlace && (await pathExists(target))) {
    throw new EngineError('ALREADY_EXISTS', `${target} already exists; refusing to overwrite it.`, {
      path: target,
    })
  }
  if (backup !== null && (await pathExists(backup))) {
    throw new EngineError(
      'ALREADY_EXISTS',
      `${backup} already exists; move it away to keep the old file there.`,
      {
        path: backup,
      },
    )
  }
  return runOverlayJob(
    'upgrade',
    {
      ...options,
      path,
      format,
      readOnly: true,
      policy: options.policy ?? STRICT_POLICY,
      needs: UPGRADE_NEEDS,
    },
    async (job) => {
      const disk = job.disk as Draft
      // The draft's own files are rewritten (its image file grows and fills, its file is replaced).
      await job.lockChain([], [disk])
      const size = disk.size
      const unit = disk.allocationUnit
      const clusterSize =
        options.clusterSize ??
        (unit >= 4096 && unit <= 2 * 1024 * 1024 ? unit : DEFAULT_CLUSTER_SIZE)
      const clusterBits = clusterBitsOf(clusterSize)
      const shape = geometry(clusterBits, size)
      if (shape.bitmapBytes > MAX_BITMAP_BYTES) {
        throw new EngineError(
          'SIZE_LIMIT',
          `${path} (${size} bytes) would need a ${shape.bitmapBytes}-byte bitmap at ${clusterSize}-byte clusters; choose larger clusters.`,
          { path, field: 'cluster size', value: clusterSize },
        )
      }
      const info = await disk.info()
      const imagePath = disk.dataFile().path
      const imageName = info['data-file'] ?? imagePath
      const stored = disk.backingLink()
      if (stored !== null && stored.format === null) {
        throw new EngineError('INTERNAL', `The backing format of ${path} could not be decided.`, {
          path,
        })
      }
      const oldFolder = dirname(path)
      const newFolder = dirname(target)
      const encoded = encodeAddCowFile(target, {
        clusterBits,
        size,
        backing:
          stored === null
            ? null
            : {
                name: restate(stored.name, resolveName(path, stored.name), oldFolder, newFolder),
                format: stored.format,
              },
        imageName: restate(imageName, imagePath, oldFolder, newFolder),
        allAllocated: disk.isAllAllocated(),
      })

      // The image file: the current layout takes the virtual size from its length.
      const image = job.adopt(await BlockFile.open(imagePath, true))
      const imageLength = await image.length()
      if (imageLength > size) {
        throw new EngineError(
          'NOT_CAPABLE',
          `The image file ${imagePath} is ${imageLength} bytes, longer than the ${size}-byte virtual size ${path} records; the current layout would show ${imageLength} bytes.`,
          { path, field: 'size', value: size },
        )
      }
      const bitmap = Buffer.alloc(shape.bitmapArea)
      let filledClusters = 0
      await job.walk(
        {
          select: 'allocated',
          unit: clusterSize,
          runs: (first, end, visit) => clusterRuns(disk, clusterSize, first, end, visit),
        },
        async (runs) => {
          for (const run of runs) {
            for (let cluster = run.first; cluster < run.stop; cluster++) {
              bitmap[cluster >>> 3]! |= 1 << (cluster & 7)
              if (await completeCluster(disk, image, cluster * clusterSize, clusterSize))
                filledClusters++
            }
          }
        },
      )
      if (imageLength < size) await image.truncate(size)
      await image.sync()
      job.throwIfCancelled()

      await replaceFile(
        target,
        async (meta) => {
          await writeAddCowFile(meta, encoded, bitmap)
          if (backup === null) return
          try {
            await link(path, backup)
          } catch (error) {
            throw wrapIoError(error, backup, 'keep the old file as')
          }
        },
        {
          exclusive: !inPlace,
          tag: 'upgrading',
          ...(options.signal ? { signal: options.signal } : {}),
          operation: 'upgrade',
          doing: inPlace ? 'upgrade' : 'create',
        },
      )

      const trust: { from: string; to: string }[] = []
      const realTarget = await realPath(target)
      for (const name of info.names ?? []) {
        if (name.followed) trust.push({ from: realTarget, to: await realPath(name.resolved) })
      }
      return { path: target, layout: format, clusterSize, size, filledClusters, backup, trust }
    },
  )
}

/**
 * The allocation of the new clusters [first, end) of `clusterSize` bytes: a new cluster is
 * allocated when any of the draft's units inside it is.
 */
function clusterRuns(
  disk: Draft,
  clusterSize: number,
  first: number,
  end: number,
  visit: (first: number, stop: number, allocated: boolean) => void,
): void {
  const unit = disk.allocationUnit
  const units = Math.ceil(disk.size / unit)
  let runStart = first
  let runValue: boolean | null = null
  let cursor = first
  const emit = (upTo: number, value: boolean): void => {
    if (upTo <= cursor) return
    if (runValue !== null && runValue !== value) {
      visit(runStart, cursor, runValue)
      runStart = cursor
    }
    runValue = value
    cursor = upTo
  }
  disk.forEachAllocationRun(
    Math.floor((first * clusterSize) / unit),
    Math.min(units, Math.ceil((end * clusterSize) / unit)),
    (from, stop, allocated) => {
      if (!allocated) return
      // Clusters before this run (not yet emitted) hold nothing; those it touches hold data.
      const firstCluster = Math.max(first, Math.floor((from * unit) / clusterSize))
      const lastCluster = Math.min(end, Math.ceil((stop * unit) / clusterSize))
      emit(firstCluster, false)
      emit(lastCluster, true)
    },
  )
  emit(end, false)
  if (runValue !== null && cursor > runStart) visit(runStart, cursor, runValue)
}

/**
 * Copy from below into the image file every draft unit of the new cluster at `start` that the
 * draft does not hold; returns whether there was any (the cluster was partly allocated).
 */
async function completeCluster(
  disk: Draft,
  image: BlockFile,
  start: number,
  clusterSize: number,
): Promise<boolean> {
  const unit = disk.allocationUnit
  const end = Math.min(start + clusterSize, disk.size)
  const holes: [number, number][] = []
  disk.forEachAllocationRun(
    Math.floor(start / unit),
    Math.floor((end - 1) / unit) + 1,
    (first, stop, allocated) => {
      if (!allocated) holes.push([Math.max(first * unit, start), Math.min(stop * unit, end)])
    },
  )
  for (const [from, to] of holes) {
    const data = Buffer.alloc(to - from)
    await readBelow(disk.backing, data, from)
    await image.writeAt(data, from)
  }
  return holes.length > 0
}
