import { assertAbilities, wholeViewFile, type Disk, type OperationOptions } from '../disk'
import { EngineError, isEngineError, throwIfAborted } from '../errors'
import { BlockFile } from '../file'
import { ClusterBitmap } from '../formats/common/bitmap'
import { realPath } from '../fs'
import { assertFollowable, judgeName, STRICT_POLICY, type NamePolicy } from '../names'
import { chainOf, openImage } from '../open'
import { processIdentity } from '../processes'
import { guardCommitRadius, type DependentImage } from '../ops/blast-radius'
import {
  COMMIT_NEEDS,
  copyIntoRaw,
  copyThroughDisk,
  emptyRange,
  journalRuns,
  markJournalCopied,
  mergeRanges,
  openOrCreateJournal,
  type Overlay,
} from '../ops/commit'
import type { UndoJournal } from '../ops/undo-journal'
import { MAX_INTERRUPTED_RANGES, withoutRunningProcess, type InterruptedCommit } from '../library'
import { recordBaseFingerprint } from '../ops/drift'
import { walkAllocation, WINDOW_BYTES, type AllocationRun } from '../ops/job'
import { assertStillServed, piecesOf, runsIn, Throttle, type Piece } from './live-copy'
import type { LiveTarget } from './registry'

/**
 * Dirty bytes left after which an active commit stops chasing the guest and copies the rest
 * with the guest held (the pause that ends it).
 */
const CONVERGED_BYTES = 4 * 1024 * 1024
/** Passes over the dirty clusters before the rest is copied with the guest held. */
const MAX_PASSES = 5

/** How the live commit runs. */
export interface LiveCommitOptions extends OperationOptions {
  /**
   * Depth in the served chain of the layer to commit into the layer below it: 0 (default) the
   * served top itself (active commit), 1 the layer the top reads through, ...
   */
  layer?: number
  /** Commit even though other images read through the base (their guest view changes). */
  force?: boolean
  /** Do not count the images that could not be checked as affected. */
  ignoreUnchecked?: boolean
  /** Bytes per second at most (null or absent: as fast as it goes). */
  rate?: number | null
  /**
   * Save the base bytes the commit overwrites in this undo journal (offline commit's: resumed
   * when it exists; `addcow commit --rollback` undoes the commit, `addcow commit --undo` ends
   * one a crash cut short).
   */
  undo?: string
}

/** What a live commit did. */
export interface LiveCommitResult {
  overlay: string
  base: string
  baseFormat: string
  /** The served top itself was committed; the export now serves the base. */
  active: boolean
  /** Clusters and bytes of the layer copied into the base (copies again of dirty ones included). */
  clusters: number
  bytes: number
  /** Passes over the layer: the first copy, then the passes over what the guest wrote meanwhile. */
  passes: number
  /** What the export serves now. */
  served: string
  dependents: DependentImage[]
  unchecked: DependentImage[]
  /** The undo journal kept, or null. */
  undo: string | null
}

/** The base a live commit writes, open for writing, and how to copy into it. */
interface CommitTarget {
  base: Disk
  basePath: string
  /** The layer's real path (the library's key for its interrupted commit). */
  overlayPath: string
  /** Guest ranges of the layer copied into the base so far (this run's, unmerged). */
  copied: [number, number][]
  /** The base's one plain file (raw, flattened add-cow): copies go there in the kernel. */
  file: BlockFile | null
  radius: { dependents: DependentImage[]; unchecked: DependentImage[] }
  journal: UndoJournal | null
  /** Copy the layer's bytes [start, end) into the base (the journal first saves what it overwrites). */
  copy(start: number, end: number): Promise<void>
  /** Make what was copied durable. */
  sync(): Promise<void>
  /** After {@link sync}, before the layer empties: the journal says the base holds it all. */
  markCopied(): Promise<void>
  close(): Promise<void>
}

/**
 * The live commit (issue 17 item 3): commit a layer of the chain an export serves into the
 * layer below it, while the guest goes on, with offline commit's blast-radius rule (refused
 * when other images read through the base, unless `force`).
 *
 * - A layer below the top (`layer` ≥ 1) is read-only in the served chain, so its clusters are
 *   copied into the base as they are; then, under quiesce, the layer is emptied (bits cleared,
 *   durable) and the export swaps to its chain opened again (the old handles cache the old
 *   bitmap), and the layer's image file is punched.
 * - The served top (`layer` 0, active commit): its clusters are copied piece by piece under the
 *   export's range lock, while an observer marks every cluster the guest writes dirty; passes
 *   over the dirty clusters follow until few are left ({@link CONVERGED_BYTES}) or
 *   {@link MAX_PASSES}; then, under quiesce, the last dirty clusters are copied, the base
 *   synced, the top emptied durably (it reads the base, which holds its data: the same view)
 *   and the export swapped onto the base, opened writable.
 *
 * Crash safety is offline commit's: until the layer is emptied it holds every cluster, so a
 * crash leaves its view unchanged and the same job on the restarted export copies again; once
 * emptied it reads the base, which holds its data. The guest never writes the base before the
 * top is durably empty.
 */
export async function liveCommit(
  target: LiveTarget,
  options: LiveCommitOptions = {},
): Promise<LiveCommitResult> {
  const { live } = target
  const depth = options.layer ?? 0
  const top = live.current
  const chain = chainOf(top)
  const layer = chain[depth]
  if (!Number.isSafeInteger(depth) || depth < 0 || !layer) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `The export serves a chain of ${chain.length} layer(s) (${chain.map((disk) => disk.path).join(' → ')}); --layer ${depth} names none of them.`,
      { path: top.path, field: 'layer', value: depth },
    )
  }
  assertAbilities(layer, COMMIT_NEEDS, 'the live commit')
  if (top.readOnly) {
    throw new EngineError(
      'READ_ONLY',
      `${top.path} is served read-only; the live commit empties a layer of its chain (serve it without --read-only).`,
      { path: top.path },
    )
  }
  const overlay = layer as Overlay
  const into = await openTarget(target, overlay, depth === 0, options)
  const record = await recordRunning(target, overlay, into)
  try {
    const result =
      depth === 0
        ? await activeCommit(target, overlay, into, options)
        : await commitBelowTop(target, overlay, into, options)
    await target.library?.clearInterruptedCommit(into.overlayPath).catch(() => undefined)
    return result
  } catch (error) {
    // Back to the export's own locks (the base shared again), unless the chain changed.
    if (live.current === top) await target.locks.retarget(top).catch(() => undefined)
    await recordStopped(target, record, into, error)
    throw error
  } finally {
    await into.close()
  }
}

/**
 * Record the live commit in the library as it starts, with this process's pid: the app's
 * Commit screen and `addcow info` show it as interrupted (with Resume and, given a journal,
 * Roll back) if this process dies before it ends, as offline commit's stopped commits are.
 */
async function recordRunning(
  served: LiveTarget,
  overlay: Overlay,
  target: CommitTarget,
): Promise<InterruptedCommit | null> {
  if (!served.library) return null
  const identity = processIdentity(process.pid)
  const record: InterruptedCommit = {
    overlay: target.overlayPath,
    base: target.basePath,
    journal: target.journal?.path ?? null,
    bytesCommitted: 0,
    ranges: [],
    bytesTotal: Math.min(
      overlay.allocationCount().allocated * overlay.allocationUnit,
      overlay.size,
    ),
    dependents: target.radius.dependents.map((entry) => entry.path),
    code: 'INTERRUPTED',
    message: `The live commit in process ${process.pid} did not end: the process serving ${overlay.path} stopped (killed or crashed) while it copied.`,
    at: new Date().toISOString(),
    runningIn: process.pid,
    ...(identity ? { runningProcess: identity } : {}),
  }
  await served.library.recordInterruptedCommit(record).catch(() => undefined)
  return record
}

/**
 * The live commit stopped (cancelled, or an error): the record says what the base holds now
 * and why, as offline commit's; forgotten when nothing reached the base.
 */
async function recordStopped(
  served: LiveTarget,
  record: InterruptedCommit | null,
  target: CommitTarget,
  error: unknown,
): Promise<void> {
  if (!served.library || !record) return
  const ranges = target.journal
    ? target.journal.committed.intervals.map(([start, end]): [number, number] => [start, end])
    : target.copied
  const { merged, bytes } = mergeRanges(ranges)
  if (bytes === 0) {
    await served.library.clearInterruptedCommit(record.overlay).catch(() => undefined)
    return
  }
  const stopped = withoutRunningProcess(record)
  await served.library
    .recordInterruptedCommit({
      ...stopped,
      bytesCommitted: bytes,
      ranges: merged.slice(0, MAX_INTERRUPTED_RANGES),
      code: isEngineError(error) ? error.code : 'INTERNAL',
      message: error instanceof Error ? error.message : String(error),
      at: new Date().toISOString(),
    })
    .catch(() => undefined)
}

/**
 * Find the base `overlay` commits into, check the blast radius, and open the base for writing
 * (grown to the overlay's size when smaller, as offline commit does).
 */
async function openTarget(
  served: LiveTarget,
  overlay: Overlay,
  active: boolean,
  options: LiveCommitOptions,
): Promise<CommitTarget> {
  const link = overlay.backingLink()
  if (link === null) {
    throw new EngineError('BAD_ARGUMENT', `${overlay.path} has no backing file to commit into.`, {
      path: overlay.path,
      field: 'backing name',
    })
  }
  const policy = served.policy ?? STRICT_POLICY
  let basePath: string
  let baseFormat: string
  if (overlay.backing) {
    basePath = await realPath(overlay.backing.path)
    baseFormat = overlay.backing.format
  } else {
    // ALL_ALLOCATED: the driver did not open the base; judge its name as the open would.
    const verdict = await judgeName(overlay.path, link.name, link.format, policy)
    assertFollowable(overlay.path, 'backing file', verdict)
    basePath = verdict.realPath
    baseFormat = link.format ?? 'raw'
  }
  const overlayPath = await realPath(overlay.path)
  const radius = await guardCommitRadius({
    overlay: overlayPath,
    base: basePath,
    library: served.library ?? null,
    policy,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.force !== undefined ? { force: options.force } : {}),
    ...(options.ignoreUnchecked !== undefined ? { ignoreUnchecked: options.ignoreUnchecked } : {}),
  })
  let base = await openImage(basePath, { format: baseFormat, readOnly: false, policy })
  let journal: UndoJournal | null = null
  try {
    if (!base.capabilities.write) {
      throw new EngineError(
        'NOT_CAPABLE',
        `${basePath} is a ${baseFormat} image, which this tool cannot write.`,
        { path: basePath },
      )
    }
    // The base exclusively (and the layer a commit below the top empties), as offline commit
    // locks them: a reader elsewhere (a VM on another overlay of the base) is BUSY, not changed.
    await served.locks.retarget(served.live.current, active ? [base] : [base, overlay])
    if (active && base.size > overlay.size) {
      // The export goes on with the base: its clients cannot see the disk grow.
      throw new EngineError(
        'NOT_CAPABLE',
        `${basePath} is ${base.size} bytes, larger than the served ${overlay.path} (${overlay.size}); an active commit would change the size the export serves. Commit it offline.`,
        { path: basePath, field: 'virtual size', value: base.size },
      )
    }
    if (options.undo !== undefined)
      journal = await openJournal(options.undo, overlay, overlayPath, base, basePath)
    if (overlay.size > base.size) {
      if (!base.growAndClose) {
        throw new EngineError(
          'NOT_CAPABLE',
          `${basePath} (${baseFormat}) is smaller than ${overlay.path} and cannot be grown by this tool.`,
          { path: basePath, field: 'virtual size', value: base.size },
        )
      }
      await base.growAndClose(overlay.size)
      base = await openImage(basePath, { format: baseFormat, readOnly: false, policy })
    }
  } catch (error) {
    await journal?.close().catch(() => undefined)
    await base.close().catch(() => undefined)
    throw error
  }
  const plain = wholeViewFile(base)
  const file = plain ? await BlockFile.open(plain.path, true) : null
  const writer = base
  const copied: [number, number][] = []
  return {
    base,
    basePath,
    overlayPath,
    copied,
    file,
    radius: { dependents: radius.dependents, unchecked: radius.unchecked },
    journal,
    async copy(start, end) {
      copied.push([start, end])
      if (journal) await journalRuns(journal, writer, [{ start, end }])
      // The guest writes the top meanwhile: its extents are asked for each run, never listed once.
      if (file) await copyIntoRaw(overlay, file, start, end, null)
      else await copyThroughDisk(overlay, writer, start, end)
    },
    sync: () => (file ? file.sync() : writer.flush()),
    markCopied: async () => {
      if (journal) await markJournalCopied(journal, overlayPath, writer)
    },
    async close() {
      await file?.close().catch(() => undefined)
      await journal?.close().catch(() => undefined)
    },
  }
}

/** The result every live commit returns, before the counts are filled in. */
function resultOf(
  overlay: Disk,
  target: CommitTarget,
  active: boolean,
  served: string,
): LiveCommitResult {
  return {
    overlay: overlay.path,
    base: target.basePath,
    baseFormat: target.base.format,
    active,
    clusters: 0,
    bytes: 0,
    passes: 0,
    served,
    ...target.radius,
    undo: target.journal?.path ?? null,
  }
}

/** The undo journal of a live commit of `overlay` into `base` (offline commit's). */
async function openJournal(
  path: string,
  overlay: Overlay,
  overlayPath: string,
  base: Disk,
  basePath: string,
): Promise<UndoJournal> {
  if (!base.dataFile) {
    throw new EngineError(
      'NOT_CAPABLE',
      `An undo journal needs a raw or add-cow base; ${base.path} is ${base.format}.`,
      { path: base.path, field: 'undo', value: path },
    )
  }
  return (await openOrCreateJournal(path, overlay, overlayPath, base, basePath)).journal
}

/** Commit a layer below the served top: nobody writes it, so one pass, then one swap. */
async function commitBelowTop(
  served: LiveTarget,
  layer: Overlay,
  target: CommitTarget,
  options: LiveCommitOptions,
): Promise<LiveCommitResult> {
  const live = served.live
  const top = live.current
  const result = resultOf(layer, target, false, top.path)
  const throttle = new Throttle(options.rate ?? null, 'live commit', options.signal)
  try {
    const walked = await walkAllocation(
      layer,
      {
        operation: 'live commit',
        select: 'allocated',
        windowBytes: throttle.windowBytes(layer.allocationUnit, WINDOW_BYTES),
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      },
      async (runs) => {
        for (const run of runs) {
          for (const piece of piecesOf(run, layer.allocationUnit, layer.size)) {
            throwIfAborted(options.signal, 'live commit')
            await target.copy(piece.start, piece.end)
            await throttle.take(piece.end - piece.start)
          }
        }
      },
    )
    result.clusters = walked.units
    result.bytes = walked.bytes
    result.passes = 1
    await target.sync()
    await target.markCopied()
  } finally {
    // The base is written by now whatever happened: base first, so nothing is lost if it fails.
    await target.base.close()
  }
  throwIfAborted(options.signal, 'live commit')
  const policy = served.policy ?? STRICT_POLICY
  const { old, punching } = await live.quiesce(async (current) => {
    assertStillServed(current, top, 'live commit')
    // The served handle of the layer is read-only: empty it through one of its own.
    const { punching } = await emptyLayer(layer.path, layer.format, policy)
    // The served chain caches the layer's old bitmap: serve the chain opened again.
    const fresh = await openImage(current.path, { format: current.format, readOnly: false, policy })
    try {
      await served.locks.retarget(fresh)
    } catch (error) {
      await fresh.close().catch(() => undefined)
      throw error
    }
    const old = live.swap(fresh)
    // Flushed by the quiesce and closed below: the export's flushes need not cover it.
    live.settle(old)
    return { old, punching }
  })
  await old.close()
  await punching.catch(() => undefined)
  await recordFingerprint(served, layer.path, layer.format)
  // The layer above reads the emptied layer, whose files this commit changed (the same view):
  // its fingerprint of it is recorded again, or serving the top later would be refused.
  const chainNow = chainOf(live.current)
  const above = chainNow[chainNow.findIndex((disk) => disk.path === layer.path) - 1]
  if (above && served.library) await recordBaseFingerprint(above, served.library).catch(() => null)
  return result
}

/**
 * Empty the add-cow layer at `path` (opened writable here): every cluster made to read the base
 * again, durably, ALL_ALLOCATED first handed over to a full bitmap. Returns the punching of its
 * image file, still running (a leak at worst if it fails), inside an object so that awaiting
 * this function does not wait for it.
 */
async function emptyLayer(
  path: string,
  format: string,
  policy: NamePolicy,
): Promise<{ punching: Promise<'punched' | 'zeroed'> }> {
  let disk = await openImage(path, { format, readOnly: false, policy })
  try {
    if (disk.isAllAllocated?.()) {
      await disk.clearAllAllocatedAndClose!()
      disk = await openImage(path, { format, readOnly: false, policy })
    }
    const overlay = disk as Overlay
    return await emptyRange(overlay, 0, overlay.allocationCount().total)
  } finally {
    await disk.close()
  }
}

/** The clusters an active commit must copy again: those the guest wrote since their copy. */
class DirtyClusters {
  private readonly bits: ClusterBitmap

  constructor(
    private readonly unit: number,
    clusters: number,
  ) {
    this.bits = new ClusterBitmap(new Uint8Array(Math.ceil(clusters / 8)), clusters)
  }

  /** A guest write touched bytes [offset, offset + length). */
  add(offset: number, length: number): void {
    this.bits.setRange(
      Math.floor(offset / this.unit),
      Math.min(this.bits.clusters, Math.ceil((offset + length) / this.unit)),
    )
  }

  /** Units [first, stop) are being copied now (under the range lock): clean until written. */
  clear(first: number, stop: number): void {
    this.bits.clearRange(first, stop)
  }

  get bytes(): number {
    return this.bits.allocatedCount * this.unit
  }

  /** The dirty runs now (a copy: clearing while visiting is allowed). */
  runs(size: number): AllocationRun[] {
    const runs: AllocationRun[] = []
    this.bits.forEachRun(0, this.bits.clusters, (first, stop, dirty) => {
      if (dirty)
        runs.push({ first, stop, start: first * this.unit, end: Math.min(stop * this.unit, size) })
    })
    return runs
  }
}

/** Active commit: copy the served top into its base while the guest writes, then serve the base. */
async function activeCommit(
  served: LiveTarget,
  top: Overlay,
  target: CommitTarget,
  options: LiveCommitOptions,
): Promise<LiveCommitResult> {
  const live = served.live
  const result = resultOf(top, target, true, target.basePath)
  const unit = top.allocationUnit
  const throttle = new Throttle(options.rate ?? null, 'live commit', options.signal)
  const dirty = new DirtyClusters(unit, top.allocationCount().total)
  // Called under the range lock of each guest write: a piece copied later sees the write done.
  const stopObserving = live.onGuestWrite((offset, length) => dirty.add(offset, length))
  let swapped = false
  // The base changes under the top from now on, but never where the top reads it (the top
  // holds every cluster copied, until it is emptied): the top's fingerprint of its base is
  // dropped, so a restart after a crash mid-commit serves it again without --accept-base, and
  // recorded again if the commit stops before the swap (as offline commit does).
  const topPath = await realPath(top.path)
  await served.library?.forgetBaseFingerprint(topPath)
  try {
    /** Copy the clusters of `piece` the top holds, with guest writes to them held meanwhile. */
    const copyPiece = async (piece: Piece): Promise<void> => {
      await live.withRanges(piece.start, piece.end - piece.start, async (current) => {
        assertStillServed(current, top, 'live commit')
        dirty.clear(piece.first, piece.stop)
        for (const part of runsIn(top, piece.first, piece.stop, true)) {
          await target.copy(part.start, part.end)
          result.clusters += part.stop - part.first
          result.bytes += part.end - part.start
        }
      })
      await throttle.take(piece.end - piece.start)
    }
    const copyRuns = async (runs: AllocationRun[]): Promise<void> => {
      for (const run of runs) {
        for (const piece of piecesOf(run, unit, top.size)) {
          throwIfAborted(options.signal, 'live commit')
          await copyPiece(piece)
        }
      }
    }
    await walkAllocation(
      top,
      {
        operation: 'live commit',
        select: 'allocated',
        windowBytes: throttle.windowBytes(unit, WINDOW_BYTES),
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      },
      copyRuns,
    )
    result.passes = 1
    while (dirty.bytes > CONVERGED_BYTES && result.passes < MAX_PASSES) {
      result.passes++
      await copyRuns(dirty.runs(top.size))
    }
    await target.sync()
    throwIfAborted(options.signal, 'live commit')
    const policy = served.policy ?? STRICT_POLICY
    const { old, punching } = await live.quiesce(async (current) => {
      assertStillServed(current, top, 'live commit')
      // The guest is held: the last dirty clusters, then the base made durable.
      for (const run of dirty.runs(top.size)) {
        for (const part of runsIn(top, run.first, run.stop, true)) {
          await target.copy(part.start, part.end)
          result.clusters += part.stop - part.first
          result.bytes += part.end - part.start
        }
      }
      await target.sync()
      await target.markCopied()
      // The top empties durably before the guest writes the base: from here on it reads the
      // base, which holds its data, so whatever happens next its view stays the guest's.
      if (top.isAllAllocated()) {
        // A flattened top: its flag goes to a full bitmap (which closes it), then it empties.
        await top.clearAllAllocatedAndClose!()
        let punching: Promise<'punched' | 'zeroed'>
        try {
          punching = (await emptyLayer(top.path, top.format, policy)).punching
        } catch (error) {
          // Serve the top again as it now stands (full or partly emptied: the same view).
          live.swap(await openImage(top.path, { format: top.format, readOnly: false, policy }))
          live.settle(top)
          throw error
        }
        await served.locks.retarget(target.base)
        live.swap(target.base)
        live.settle(top)
        swapped = true
        return { old: null, punching }
      }
      const { punching } = await emptyRange(top, 0, top.allocationCount().total)
      // The base becomes the top (exclusive, as it already is); the emptied top's locks go.
      await served.locks.retarget(target.base)
      const old = live.swap(target.base)
      live.settle(old)
      swapped = true
      return { old, punching }
    })
    result.passes++
    await old?.close()
    await punching.catch(() => undefined)
  } catch (error) {
    if (!swapped) await recordFingerprint(served, top.path, top.format)
    throw error
  } finally {
    stopObserving()
    // Once swapped, the base is the export's to close.
    if (!swapped) await target.base.close().catch(() => undefined)
  }
  // The guest now writes the base: the emptied top's view follows it, nothing to guard.
  await served.library?.forgetBaseFingerprint(topPath).catch(() => undefined)
  options.onProgress?.(result.bytes, result.bytes)
  return result
}

/** Record the base's new fingerprint for the committed layer (its own commit changed it). */
async function recordFingerprint(served: LiveTarget, path: string, format: string): Promise<void> {
  const library = served.library
  if (!library) return
  const disk = await openImage(path, {
    format,
    readOnly: true,
    ...(served.policy ? { policy: served.policy } : {}),
  }).catch(() => null)
  if (!disk) return
  try {
    await recordBaseFingerprint(disk, library).catch(() => null)
  } finally {
    await disk.close()
  }
}
