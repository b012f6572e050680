import { type Disk, type DiskAbility, type FormatDriver, type OperationOptions } from '../disk'
import { EngineError, quote } from '../errors'
import { readBelow } from '../extents'
import { pathExists, realPath } from '../fs'
import { buildGraph, cycleThrough, loopBelow } from '../graph'
import type { Library } from '../library'
import { judgeName, resolveName, STRICT_POLICY, type NamePolicy } from '../names'
import { openImage, probeFormat } from '../open'
import { loadDriver } from '../registry'
import { fingerprintBase } from './drift'
import { fileLocks, runJob, runOverlayJob, type OverlayJob } from './job'

/** Bytes compared per step. */
const STEP_BYTES = 4 * 1024 * 1024
/** Data copied between two flushes. */
const FLUSH_BYTES = 256 * 1024 * 1024

/** What safe rebase needs of an overlay's format (besides the driver's readLinks, setBacking). */
const REBASE_NEEDS: readonly DiskAbility[] = [
  'dataFile',
  'forEachAllocationRun',
  'markAllocated',
  'isAllAllocated',
]

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

async function isZeroView(disk: Disk | null, offset: number, length: number): Promise<boolean> {
  if (!disk || offset >= disk.size) return true
  if (!disk.capabilities.blockStatus) return false
  const inside = Math.min(length, disk.size - offset)
  return (await disk.blockStatus(offset, inside)).every((extent) => extent.zero)
}

/** The driver of the overlay at `path`, which must store and rewrite its backing link. */
async function linkDriver(
  path: string,
): Promise<FormatDriver & Required<Pick<FormatDriver, 'readLinks' | 'setBacking'>>> {
  const driver = await loadDriver(await probeFormat(path), path)
  const { readLinks, setBacking } = driver
  if (!readLinks || !setBacking) {
    throw new EngineError(
      'NOT_CAPABLE',
      `${path} is a ${driver.name} image, whose backing file this tool cannot rewrite; rebase works on add-cow overlays.`,
      { path, field: 'format', value: driver.name },
    )
  }
  return { ...driver, readLinks, setBacking }
}

/**
 * `rebase`: point an overlay at another base.
 *
 * Safe mode compares the old and the new base's guest views under every cluster the overlay
 * does not hold, copies the old content of each cluster that differs into the image file (and
 * marks it), and only then rewrites the header, so the guest view never changes. `unsafe` (-u)
 * rewrites the names only. Either way the driver's setBacking rewrites the header (add-cow:
 * byte-exact, backing name at 76, image name right after it, in a copy that is synced and
 * renamed over the add-cow file), under the overlay's exclusive locks. A crash before the
 * rename leaves the old base named and the copied clusters marked: running rebase again
 * compares only what is still unmarked.
 */
export async function rebaseOverlay(options: RebaseOptions): Promise<RebaseResult> {
  const overlayPath = await realPath(options.overlay)
  const driver = await linkDriver(overlayPath)
  const links = await driver.readLinks(overlayPath)
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
        `The new base ${quote(options.backing)} of ${overlayPath} cannot be used: ${verdict.reason} names are never followed.`,
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
    const dataReal =
      links.dataFile === null ? null : await realPath(resolveName(overlayPath, links.dataFile))
    const newReal = await realPath(newPath)
    if (newReal === overlayPath || newReal === dataReal) {
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
    oldBacking: links.backing?.name ?? null,
    newBacking: detach ? null : options.backing,
    newBackingPath: newPath,
    newBackingFormat: newFormat,
    copiedClusters: 0,
    comparedBytes: 0,
    unsafe: options.unsafe ?? false,
    trust: newPath ? [{ from: overlayPath, to: await realPath(newPath) }] : [],
  }
  const link = detach ? null : { name: options.backing, format: newFormat }
  const policy = options.policy ?? STRICT_POLICY
  if (newPath) await refuseLoop(overlayPath, newPath, options.backing, policy, options.signal)
  // The user named the new base: its own chain still follows the policy.
  const newBase =
    newPath && newFormat && !(options.unsafe && !(await pathExists(newPath)))
      ? await openImage(newPath, { format: newFormat, readOnly: true, policy })
      : null
  try {
    if (options.unsafe) {
      await runJob('rebase', options, async (job) => {
        const files = [
          overlayPath,
          ...(links.dataFile ? [resolveName(overlayPath, links.dataFile)] : []),
        ]
        await job.lock(await fileLocks(files, 'exclusive'))
        job.throwIfCancelled()
        await driver.setBacking(overlayPath, link, options.signal)
      })
    } else {
      await runOverlayJob(
        'rebase',
        {
          ...options,
          path: overlayPath,
          format: driver.name,
          needs: REBASE_NEEDS,
          drift: {
            library: options.library,
            accept: options.acceptBase ?? false,
            doing: 'rebase it',
          },
        },
        async (job) => {
          await job.lockChain(newBase ? [newBase] : [])
          await copyDifferences(job, newBase, result)
          // The header is replaced by a renamed copy: every handle on the file closes first.
          await job.closeDisk()
          job.throwIfCancelled()
          await driver.setBacking(overlayPath, link, options.signal)
        },
      )
    }
    if (newBase)
      await options.library.recordBaseFingerprint(await fingerprintBase(overlayPath, newBase))
    return result
  } finally {
    await newBase?.close().catch(() => undefined)
  }
}

/** The path names in a cycle, for a message: a → b → a. */
function cycleText(cycle: string[]): string {
  return cycle.join(' → ')
}

/**
 * Refuse a new base whose chain of stored names (through flattened layers too, which never
 * read their base but still name it) contains the overlay, or loops by itself: the rebase
 * would leave a chain that never ends. Asks the dependency graph, following names only.
 */
async function refuseLoop(
  overlayPath: string,
  newPath: string,
  stored: string,
  policy: NamePolicy,
  signal: AbortSignal | undefined,
): Promise<void> {
  const newReal = await realPath(newPath)
  const graph = await buildGraph({
    library: null,
    extra: [newReal],
    chainsOnly: true,
    namesOnly: true,
    policy,
    ...(signal ? { signal } : {}),
  })
  const cycle = cycleThrough(graph, overlayPath, newReal)
  if (cycle) {
    throw new EngineError(
      'CHAIN_LOOP',
      `The new base ${newPath} of ${overlayPath} is built on the overlay itself; the chain would loop: ${cycleText(cycle)}.`,
      { path: overlayPath, field: 'backing name', value: stored },
    )
  }
  const loop = loopBelow(graph, newReal)
  if (loop) {
    throw new EngineError(
      'CHAIN_LOOP',
      `The chain below the new base ${newPath} loops (${cycleText([...loop, loop[0]!])}); it cannot be a base.`,
      { path: overlayPath, field: 'backing name', value: stored },
    )
  }
}

/**
 * Safe mode's copy body: for each cluster the overlay does not hold, compare the old base's
 * view with the new base's; copy the old content of every run of clusters that differ into the
 * image file, and mark them.
 */
async function copyDifferences(
  job: OverlayJob,
  newBase: Disk | null,
  result: RebaseResult,
): Promise<void> {
  const disk = job.disk as Disk & Required<Pick<Disk, (typeof REBASE_NEEDS)[number]>>
  if (disk.isAllAllocated()) return
  const old = disk.backing
  const clusterSize = disk.allocationUnit
  const image = disk.dataFile()
  const oldBuffer = Buffer.allocUnsafe(STEP_BYTES)
  const newBuffer = Buffer.allocUnsafe(STEP_BYTES)
  await job.walk(
    {
      select: 'unallocated',
      windowBytes: STEP_BYTES,
      flush: { every: FLUSH_BYTES, flush: () => disk.flush() },
    },
    async (runs) => {
      let written = 0
      for (const { first: start, stop, start: from, end: to } of runs) {
        result.comparedBytes += to - from
        if (
          (await isZeroView(old, from, to - from)) &&
          (await isZeroView(newBase, from, to - from))
        )
          continue
        const oldPiece = oldBuffer.subarray(0, to - from)
        const newPiece = newBuffer.subarray(0, to - from)
        await Promise.all([readBelow(old, oldPiece, from), readBelow(newBase, newPiece, from)])
        // Copy each maximal run of differing clusters in one write.
        let runStart = -1
        for (let cluster = start; cluster <= stop; cluster++) {
          const a = (cluster - start) * clusterSize
          const b = Math.min(a + clusterSize, to - from)
          const differs = cluster < stop && !oldPiece.subarray(a, b).equals(newPiece.subarray(a, b))
          if (differs && runStart < 0) runStart = cluster
          if (!differs && runStart >= 0) {
            const offset = (runStart - start) * clusterSize
            await image.writeAt(oldPiece.subarray(offset, a), from + offset)
            disk.markAllocated(runStart, cluster)
            result.copiedClusters += cluster - runStart
            written += a - offset
            runStart = -1
          }
        }
      }
      return written
    },
  )
  await disk.flush()
}
