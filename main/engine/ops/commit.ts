import { stat } from 'node:fs/promises'
import {
  assertAbilities,
  wholeViewFile,
  type BackingLink,
  type Disk,
  type DiskAbility,
  type OperationOptions,
} from '../disk'
import { EngineError, isEngineError, throwIfAborted } from '../errors'
import { runLimited } from '../extents'
import { BlockFile } from '../file'
import { formatSize } from '../units'
import { realPath } from '../fs'
import {
  canListDataExtents,
  copyRange,
  dataExtentsIn,
  forEachDataExtent,
  punchOrZero,
} from '../formats/common/sparse'
import { MAX_INTERRUPTED_RANGES, type InterruptedCommit, type Library } from '../library'
import { assertFollowable, judgeName, STRICT_POLICY, type NamePolicy } from '../names'
import { openImage } from '../open'
import { recordedProcessRuns } from '../processes'
import { loadDriver } from '../registry'
import { guardCommitRadius, type DependentImage } from './blast-radius'
import { fingerprintBase, fingerprintChanges, recordBaseFingerprint } from './drift'
import { fileLocks, runJob, runOverlayJob, WINDOW_BYTES, type OverlayJob } from './job'
import { UndoJournal, type UndoHeader } from './undo-journal'

/** Kernel copies in flight at once into a raw base (on the libuv thread pool). */
const COPY_PARALLELISM = 4
/**
 * A commit without an undo journal empties the overlay in this many phases of its guest range,
 * each one's holes punched while the next phase copies: freeing a fragmented image file's
 * blocks costs about as much as the copy on ext4 (tests/bench/commit-stream.ts), and this way
 * most of it overlaps the copy. Each phase adds a sync of the base and of the bitmap.
 */
const EMPTYING_PHASES = 8

/** What commit needs of the overlay's format (the live commit needs the same). */
export const COMMIT_NEEDS: readonly DiskAbility[] = [
  'backingLink',
  'dataFile',
  'forEachAllocationRun',
  'allocationCount',
  'isAllAllocated',
  'markUnallocated',
]
/** The overlay as commit uses it. */
export type Overlay = Disk & Required<Pick<Disk, (typeof COMMIT_NEEDS)[number]>>

/** What `addcow commit` needs. */
export interface CommitOptions extends OperationOptions {
  /** The add-cow overlay whose clusters go into its backing file. */
  overlay: string
  /** Keep the overlay's contents afterwards (qemu-img commit -d); the overlay stays read-only. */
  keep?: boolean
  /** Commit even though other images read through the base (their guest view changes). */
  force?: boolean
  /** Do not count the images that could not be checked as affected (the user vouches). */
  ignoreUnchecked?: boolean
  /** Commit even though the base changed since its fingerprint was recorded. */
  acceptBase?: boolean
  /** Save the base bytes the commit overwrites in this undo journal (resumes an existing one). */
  undo?: string
  library: Library
  policy?: NamePolicy
}

/** What a commit did. */
export interface CommitResult {
  overlay: string
  base: string
  baseFormat: string
  /** Clusters of the overlay copied into the base, and their bytes. */
  clusters: number
  bytes: number
  /** Whether the overlay was emptied (bitmap cleared, image file punched). */
  emptied: boolean
  /** How the overlay's image file was emptied: holes punched, or zeros written. */
  emptiedBy: 'punched' | 'zeroed' | null
  /** Other images whose guest view changed (non-empty only with `force`). */
  dependents: DependentImage[]
  /** Images that could not be checked (non-empty only with `force` or `ignoreUnchecked`). */
  unchecked: DependentImage[]
  undo: string | null
  /** The undo journal existed already: this run resumed an interrupted commit. */
  resumed: boolean
  /** The base grew to the overlay's size (from, to), as qemu-img commit does. */
  grewBase: [number, number] | null
  lockKind: string
}

/** Options of {@link rollbackCommit}. */
export interface RollbackOptions extends OperationOptions {
  journal: string
  /**
   * Roll back even though the base changed after the commit, the overlay is gone, or other
   * images read through the base (their guest view changes back).
   */
  force?: boolean
  /** Do not count the images that could not be checked as affected (the user vouches). */
  ignoreUnchecked?: boolean
  library: Library
  policy?: NamePolicy
}

/** What a rollback did. */
export interface RollbackResult {
  base: string
  overlay: string
  /** Base bytes put back, and overlay clusters given back their data. */
  restoredBytes: number
  overlayClusters: number
  alreadyDone: boolean
  /** The other images whose guest view the rollback changed (the commit's blast radius). */
  dependents: DependentImage[]
  unchecked: DependentImage[]
}

/**
 * `commit`: copy every allocated cluster of an overlay into its direct backing file (raw or
 * add-cow, or any writable format), then, unless `keep`, empty the overlay.
 *
 * Before writing it checks the base's fingerprint (drift), finds the other images on the same
 * base (refusing unless `force`), locks the base exclusively (QEMU's lock bytes), and with
 * `undo` saves every base byte it overwrites in a journal before overwriting it.
 *
 * On disk, in order (docs/operations.md): base grown if smaller → per batch: journal records
 * synced, then base written → base synced → journal 'copied' → overlay bits cleared and synced
 * → overlay image file punched. Without a journal the last four steps run per phase of the
 * guest range (EMPTYING_PHASES), each phase's punching overlapping the next phase's copy. A
 * crash anywhere leaves every file valid: the overlay still marks every cluster not yet handed
 * over, so running the commit again copies those again (the same bytes) and ends with the same
 * files as an uninterrupted run.
 */
export async function commitOverlay(options: CommitOptions): Promise<CommitResult> {
  const tail: CommitTail = { emptying: null, release: null, partial: null }
  try {
    const result = await runOverlayJob(
      'commit',
      {
        ...options,
        path: options.overlay,
        readOnly: options.keep ?? false,
        needs: options.keep ? COMMIT_NEEDS : [...COMMIT_NEEDS, 'clearAllAllocatedAndClose'],
        // An ALL_ALLOCATED overlay never reads its base: the check reports 'not-consulted'.
        drift: {
          library: options.library,
          accept: options.acceptBase ?? false,
          doing: 'commit into it',
        },
      },
      (job) => commitBody(job, options, tail),
    )
    // The base changed on purpose: record its new fingerprint for this overlay (reopened, so
    // that no cached bitmap of the old base is read), while the image file's blocks are freed.
    const record = async (): Promise<void> => {
      const disk = await openImage(result.overlay, {
        readOnly: true,
        format: result.overlayFormat,
        ...(options.policy ? { policy: options.policy } : {}),
      })
      try {
        await recordBaseFingerprint(disk, options.library)
      } finally {
        await disk.close()
      }
    }
    const [emptiedBy] = await Promise.all([tail.emptying ?? Promise.resolve(null), record()])
    await options.library.clearInterruptedCommit(result.overlay)
    const { overlayFormat: _format, ...committed } = result
    void _format
    return { ...committed, emptiedBy }
  } catch (error) {
    throw await commitStopped(error, options, tail)
  } finally {
    await tail.emptying?.catch(() => undefined)
    await tail.release?.()
  }
}

/** What outlives the commit job: the hole punching still running, and the locks it needs. */
interface CommitTail {
  emptying: Promise<'punched' | 'zeroed'> | null
  release: (() => Promise<void>) | null
  /** What the commit may have written into the base so far (null until it opened it to write). */
  partial: PartialCommit | null
}

/** The base bytes a commit may have written so far: every run it started to copy. */
interface PartialCommit {
  overlay: string
  overlayFormat: string
  base: string
  journal: string | null
  dependents: string[]
  /** The base was grown (its length changed even before any copy). */
  grew: boolean
  bytesTotal: number
  /** Guest byte ranges started (an earlier run's too, from its journal), not merged. */
  ranges: [number, number][]
}

/** `ranges` sorted and merged, with the bytes they cover. */
export function mergeRanges(ranges: readonly [number, number][]): {
  merged: [number, number][]
  bytes: number
} {
  const merged: [number, number][] = []
  for (const [start, end] of [...ranges].sort((a, b) => a[0] - b[0])) {
    const last = merged[merged.length - 1]
    if (last && start <= last[1]) last[1] = Math.max(last[1], end)
    else merged.push([start, end])
  }
  return { merged, bytes: merged.reduce((sum, [start, end]) => sum + end - start, 0) }
}

/**
 * The error a commit that stopped part way throws: the same code, and a message that says what
 * the base holds now, that the overlay reads the same, who else sees part of the commit, and
 * how to resume or roll back. The overlay's base fingerprint is recorded again (its own commit
 * changed the base, not someone else), and the library keeps the state for the app.
 */
async function commitStopped(
  error: unknown,
  options: CommitOptions,
  tail: CommitTail,
): Promise<unknown> {
  const partial = tail.partial
  if (!partial || (partial.ranges.length === 0 && !partial.grew)) return error
  const { merged, bytes } = mergeRanges(partial.ranges)
  await tail.emptying?.catch(() => undefined)
  const disk = await openImage(partial.overlay, {
    readOnly: true,
    format: partial.overlayFormat,
    ...(options.policy ? { policy: options.policy } : {}),
  }).catch(() => null)
  if (disk) {
    await recordBaseFingerprint(disk, options.library).catch(() => null)
    await disk.close().catch(() => undefined)
  }
  const cancelled = isEngineError(error, 'ABORTED')
  const reason = error instanceof Error ? error.message : String(error)
  const record: InterruptedCommit = {
    overlay: partial.overlay,
    base: partial.base,
    journal: partial.journal,
    bytesCommitted: bytes,
    bytesTotal: partial.bytesTotal,
    ranges: merged.slice(0, MAX_INTERRUPTED_RANGES),
    dependents: partial.dependents,
    code: isEngineError(error) ? error.code : 'INTERNAL',
    message: reason,
    at: new Date().toISOString(),
  }
  await options.library.recordInterruptedCommit(record).catch(() => undefined)
  return new EngineError(
    isEngineError(error) ? error.code : 'IO_ERROR',
    `${describeInterruptedCommit(record, cancelled)}`,
    { path: partial.overlay, field: 'interrupted commit', value: partial.base, cause: error },
  )
}

/**
 * The interrupted commit `record` as it stands now, or null when it is not interrupted: a live
 * commit whose serving process still runs (`runningIn`, and `runningProcess` where recorded:
 * not another process that got its pid since) is going on. One whose process is gone
 * (a crash, kill -9) recorded no progress; its undo journal, when it has one, says which
 * ranges reached the base.
 */
export async function interruptedCommitNow(
  record: InterruptedCommit | null,
): Promise<InterruptedCommit | null> {
  if (!record || record.runningIn === undefined) return record
  const identity = typeof record.runningProcess === 'string' ? record.runningProcess : undefined
  if (recordedProcessRuns(record.runningIn, identity)) return null
  if (record.journal === null) return record
  const journal = await UndoJournal.open(record.journal, false).catch(() => null)
  if (!journal) return record
  try {
    const { merged, bytes } = mergeRanges(journal.committed.intervals.map(([a, b]) => [a, b]))
    return { ...record, ranges: merged.slice(0, MAX_INTERRUPTED_RANGES), bytesCommitted: bytes }
  } finally {
    await journal.close().catch(() => undefined)
  }
}

/** The sentences that say where an interrupted commit stands and what the user can do. */
export function describeInterruptedCommit(commit: InterruptedCommit, cancelled: boolean): string {
  const shown = commit.ranges
    .slice(0, 3)
    .map(([start, end]) => `${formatSize(start)}–${formatSize(end)}`)
  const more = commit.ranges.length > 3 ? `, and ${commit.ranges.length - 3} more` : ''
  const others =
    commit.dependents.length === 0
      ? 'no other image reads through the base'
      : `${commit.dependents.length} other image(s) that read through the base now see part of the commit: ${commit.dependents.slice(0, 5).join(', ')}${commit.dependents.length > 5 ? ', …' : ''}`
  const next = commit.journal
    ? `run the same commit again with --undo ${commit.journal} to resume, or 'addcow commit --rollback ${commit.journal}' to put the base back`
    : 'run the same commit again to resume (there is no undo journal, so it cannot be rolled back)'
  return [
    `The commit of ${commit.overlay} into ${commit.base} ${cancelled ? 'was cancelled' : `stopped (${commit.message})`} after ${formatSize(commit.bytesCommitted)} of ${formatSize(commit.bytesTotal)}.`,
    `The base now holds the overlay's data at ${shown.join(', ')}${more}; the rest of the base is unchanged.`,
    `The overlay still reads the same; ${others}.`,
    `To finish: ${next}.`,
  ].join(' ')
}

/** What commit found about the base before it locked anything. */
interface CommitPlan {
  basePath: string
  baseFormat: string
  overlayPath: string
  dependents: DependentImage[]
  unchecked: DependentImage[]
}

/** The commit's body, after the job's preamble opened and checked the overlay. */
async function commitBody(
  job: OverlayJob,
  options: CommitOptions,
  tail: CommitTail,
): Promise<CommitResult & { overlayFormat: string }> {
  const disk = job.disk as Overlay
  const link = disk.backingLink()
  if (link === null) {
    throw new EngineError('BAD_ARGUMENT', `${disk.path} has no backing file to commit into.`, {
      path: disk.path,
      field: 'backing name',
    })
  }
  const below = disk.backing
  // With ALL_ALLOCATED the driver does not open the backing file; open it for the checks.
  const base = below ?? (await openOverlayBase(disk, link, options))
  let plan: CommitPlan
  try {
    const basePath = await realPath(base.path)
    const overlayPath = await realPath(disk.path)
    const radius = await guardCommitRadius({
      overlay: overlayPath,
      base: basePath,
      library: options.library,
      ...(options.policy ? { policy: options.policy } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.force !== undefined ? { force: options.force } : {}),
      ...(options.ignoreUnchecked !== undefined
        ? { ignoreUnchecked: options.ignoreUnchecked }
        : {}),
    })
    // The overlay exclusively (shared with keep), the base exclusively, its chain shared.
    await job.lockChain(below ? [] : [base], [base])
    tail.release = job.handOverLocks()
    plan = {
      basePath,
      baseFormat: base.format,
      overlayPath,
      dependents: radius.dependents,
      unchecked: radius.unchecked,
    }
  } finally {
    if (!below) await base.close().catch(() => undefined)
  }
  return commitLocked(job, disk, plan, options, tail)
}

/** The copy body of commit, under the locks. */
async function commitLocked(
  job: OverlayJob,
  opened: Overlay,
  plan: CommitPlan,
  options: CommitOptions,
  tail: CommitTail,
): Promise<CommitResult & { overlayFormat: string }> {
  let overlay = opened
  if (!options.keep && overlay.isAllAllocated()) {
    // Hand ALL_ALLOCATED over to a full bitmap first (the guest view is unchanged).
    job.release(overlay)
    await overlay.clearAllAllocatedAndClose!()
    overlay = (await job.reopen()) as Overlay
    assertAbilities(overlay, COMMIT_NEEDS, 'commit')
  }
  const { basePath, baseFormat, overlayPath } = plan
  let target = await job.open(basePath, { format: baseFormat, readOnly: false })
  if (!target.capabilities.write) {
    throw new EngineError(
      'NOT_CAPABLE',
      `${basePath} is a ${baseFormat} image, which this tool cannot write.`,
      { path: basePath },
    )
  }
  if (options.undo !== undefined && !target.dataFile) {
    throw new EngineError(
      'NOT_CAPABLE',
      `An undo journal needs a raw or add-cow base; ${basePath} is ${baseFormat}.`,
      { path: basePath },
    )
  }

  let journal: UndoJournal | null = null
  let resumed = false
  if (options.undo !== undefined) {
    const opened = await openOrCreateJournal(options.undo, overlay, overlayPath, target, basePath)
    journal = job.adopt(opened.journal)
    resumed = opened.resumed
  }

  const partial: PartialCommit = {
    overlay: overlayPath,
    overlayFormat: overlay.format,
    base: basePath,
    journal: journal?.path ?? null,
    dependents: plan.dependents.map((entry) => entry.path),
    grew: false,
    bytesTotal: Math.min(
      overlay.allocationCount().allocated * overlay.allocationUnit,
      overlay.size,
    ),
    ranges: journal ? journal.committed.intervals.map(([start, end]) => [start, end]) : [],
  }
  tail.partial = partial

  let grewBase: [number, number] | null = null
  if (overlay.size > target.size) {
    partial.grew = true
    if (!target.growAndClose) {
      throw new EngineError(
        'NOT_CAPABLE',
        `${basePath} (${baseFormat}) is smaller than the overlay and cannot be grown by this tool.`,
        { path: basePath, field: 'virtual size', value: target.size },
      )
    }
    grewBase = [target.size, overlay.size]
    job.release(target)
    await target.growAndClose(overlay.size)
    target = await job.open(basePath, { format: baseFormat, readOnly: false })
  }
  // A base that is one plain file (raw, or a flattened add-cow) takes the copies in the kernel.
  const plain = wholeViewFile(target)
  const file = plain ? job.adopt(await BlockFile.open(plain.path, true)) : null
  const writer = target
  const syncBase = (): Promise<void> => (file ? file.sync() : writer.flush())

  // Without an undo journal the overlay is emptied phase by phase (see emptyRange): each
  // phase's holes are punched while the next phase copies. With a journal it is emptied at
  // the end, after the journal says 'copied', which is what its rollback relies on.
  const phased = !options.keep && !journal
  const clusterCount = overlay.allocationCount().total
  const perWindow = Math.max(1, Math.floor(WINDOW_BYTES / overlay.allocationUnit))
  const phaseClusters = phased
    ? Math.ceil(Math.ceil(clusterCount / EMPTYING_PHASES) / perWindow) * perWindow
    : clusterCount
  const copyFrom = overlay
  // Listed before any phase is punched: see ListedExtents.
  const listed =
    phased && file && canListDataExtents()
      ? await ListedExtents.list(overlay.dataFile(), overlay.size)
      : null
  const punches: Promise<'punched' | 'zeroed'>[] = []
  /** Sync the base, then empty the phase [start, end) of the overlay (its copies are done). */
  const emptyPhase = async (start: number, end: number): Promise<void> => {
    await syncBase()
    const { punching } = await emptyRange(copyFrom, start, end)
    // Handled here so that a failure while later phases copy is not an unhandled
    // rejection; combinePunches still reports it.
    punching.catch(() => undefined)
    punches.push(punching)
  }
  // The phase that is being synced and emptied while the next one copies: the sync waits on
  // the disk and the copy on the CPU, so the walk does not stop for it. One at a time, in
  // order; its failure stops the walk at the next phase.
  let emptying: Promise<void> = Promise.resolve()
  let walked
  try {
    walked = await job.walk(
      {
        select: 'allocated',
        afterWindow: async (_first, end) => {
          if (!phased || (end % phaseClusters !== 0 && end !== clusterCount)) return
          job.throwIfCancelled()
          await emptying
          const phaseStart = Math.floor((end - 1) / phaseClusters) * phaseClusters
          emptying = emptyPhase(phaseStart, end)
          // Awaited at the next phase or after the walk; not an unhandled rejection meanwhile.
          emptying.catch(() => undefined)
        },
      },
      async (runs) => {
        if (journal) await journalRuns(journal, writer, runs)
        for (const { start, end } of runs) partial.ranges.push([start, end])
        await runLimited(
          runs.map(({ start, end }) => async () => {
            if (file) await copyIntoRaw(copyFrom, file, start, end, listed)
            else await copyThroughDisk(copyFrom, writer, start, end)
          }),
          file ? COPY_PARALLELISM : 1,
        )
      },
    )
    await emptying
  } finally {
    // Neither the last phase's sync nor the punching outlives this function's caller: on
    // failure, wait for what started.
    await emptying.catch(() => undefined)
    if (punches.length > 0) {
      tail.emptying = combinePunches(punches)
      // Awaited once the job has closed (commitOverlay); not an unhandled rejection meanwhile.
      tail.emptying.catch(() => undefined)
    }
  }
  if (!phased) {
    await syncBase()
    // Also after a resumed run that copied more: the record carries the base's latest fingerprint.
    if (journal) await markJournalCopied(journal, overlayPath, target)
    if (!options.keep) {
      job.throwIfCancelled()
      tail.emptying = (await emptyRange(overlay, 0, clusterCount)).punching
    }
  }
  options.onProgress?.(walked.bytes, walked.bytes)
  return {
    overlay: overlayPath,
    overlayFormat: overlay.format,
    base: basePath,
    baseFormat,
    clusters: walked.units,
    bytes: walked.bytes,
    emptied: !options.keep,
    emptiedBy: null,
    dependents: plan.dependents,
    unchecked: plan.unchecked,
    undo: journal?.path ?? null,
    resumed,
    grewBase,
    lockKind: job.lockKind,
  }
}

/** Open the base of an ALL_ALLOCATED overlay (the driver skips it) by its stored name. */
async function openOverlayBase(
  disk: Disk,
  link: BackingLink,
  options: CommitOptions,
): Promise<Disk> {
  const verdict = await judgeName(
    disk.path,
    link.name,
    link.format,
    options.policy ?? STRICT_POLICY,
  )
  assertFollowable(disk.path, 'backing file', verdict)
  return openImage(verdict.resolved, {
    format: link.format ?? 'raw',
    readOnly: true,
    ...(options.policy ? { policy: options.policy } : {}),
  })
}

/**
 * Open the undo journal at `path` for the commit of `disk` into `target` (resuming it when it
 * exists and names the same commit), or create it; the live commit uses it too.
 */
export async function openOrCreateJournal(
  path: string,
  disk: Overlay,
  overlayPath: string,
  target: Disk,
  basePath: string,
): Promise<{ journal: UndoJournal; resumed: boolean }> {
  const exists = await stat(path).then(
    () => true,
    () => false,
  )
  if (exists) {
    const journal = await UndoJournal.open(path, true)
    const header = journal.header
    if (header.overlay !== overlayPath || header.base !== basePath) {
      await journal.close()
      throw new EngineError(
        'ALREADY_EXISTS',
        `The undo journal ${journal.path} belongs to the commit of ${header.overlay} into ${header.base}, not this one; name a new file.`,
        { path: journal.path, field: 'undo journal', value: header.overlay },
      )
    }
    if (journal.state === 'rolling-back' || journal.state === 'rolled-back') {
      await journal.close()
      throw new EngineError(
        'BAD_ARGUMENT',
        `The undo journal ${journal.path} was already used for a rollback; name a new file.`,
        {
          path: journal.path,
          field: 'undo journal',
          value: journal.state,
        },
      )
    }
    return { journal, resumed: true }
  }
  const dataFile = target.dataFile!().path
  const separate = dataFile !== target.path
  const header: UndoHeader = {
    kind: 'addcow-commit-undo',
    createdAt: new Date().toISOString(),
    overlay: overlayPath,
    overlayImage: await realPath(disk.dataFile().path),
    overlayClusterSize: disk.allocationUnit,
    overlayFormat: disk.format,
    base: basePath,
    baseFormat: target.format,
    baseDataFile: await realPath(dataFile),
    baseMetadataFile: separate ? basePath : null,
    baseClusterSize: target.allocationUnit,
    baseFeaturesBefore: target.savedState?.() ?? null,
    baseSizeBefore: target.size,
    baseDataFileLengthBefore: (await stat(dataFile)).size,
    baseMetadataLengthBefore: separate ? (await stat(basePath)).size : null,
  }
  return { journal: await UndoJournal.create(path, header), resumed: false }
}

/**
 * Record in `journal` that every committed byte is in the base, durably (`base` synced first),
 * with the base's fingerprint now: a rollback from here on restores the overlay's clusters too,
 * and refuses when the base changed since (a guest writing it after an active commit).
 */
export async function markJournalCopied(
  journal: UndoJournal,
  overlayPath: string,
  base: Disk,
): Promise<void> {
  await journal.setState({
    state: 'copied',
    at: new Date().toISOString(),
    baseAfter: await fingerprintBase(overlayPath, base),
  })
}

/** Save, before they are overwritten, the base bytes under `runs` that the journal lacks. */
export async function journalRuns(
  journal: UndoJournal,
  target: Disk,
  runs: { start: number; end: number }[],
): Promise<void> {
  const unit = target.allocationUnit
  const source = target.dataFile!()
  for (const { start, end } of runs) {
    for (const [from, to] of journal.committed.missing(start, end))
      journal.addRange(from, to - from)
    const low = Math.floor(start / unit) * unit
    const high = Math.min(Math.ceil(end / unit) * unit, target.size)
    for (const [from, to] of journal.saved.missing(low, high)) {
      if (!target.forEachAllocationRun) {
        const data = Buffer.allocUnsafe(to - from)
        await source.readAt(data, from)
        journal.addData(from, data, false)
        continue
      }
      const pending: Promise<void>[] = []
      target.forEachAllocationRun(
        Math.floor(from / unit),
        Math.ceil(to / unit),
        (first, stop, allocated) => {
          const pieceStart = Math.max(from, first * unit)
          const pieceEnd = Math.min(to, stop * unit)
          const data = Buffer.allocUnsafe(pieceEnd - pieceStart)
          pending.push(
            source
              .readAt(data, pieceStart)
              .then(() => journal.addData(pieceStart, data, allocated)),
          )
        },
      )
      await Promise.all(pending)
    }
  }
  await journal.sync()
}

/** Most extents {@link ListedExtents} keeps (16 bytes each); the rest are asked per run. */
const MAX_LISTED_EXTENTS = 262144

/**
 * The data extents of the overlay's image file, listed once before the commit punches any of
 * it. A phased commit punches the image file while it copies the next phase, and a hole punch
 * holds the file's inode lock, which every SEEK_DATA/SEEK_HOLE on that file waits for: asked
 * per run during the punching, the lseeks took 1.2 ms each instead of 20 us (4,000 of them for
 * 2,048 scattered runs: 5 of the 13 s of `addcow commit` in tests/bench/commit-stream.ts).
 * Nothing else writes the image file while the commit holds its lock, and the punching only
 * touches ranges already copied, so the extents listed first are those the copy sees.
 */
class ListedExtents {
  private constructor(
    private readonly flat: number[],
    /** The extents of [0, coveredEnd) are all listed; beyond it, ask the file. */
    private readonly coveredEnd: number,
  ) {}

  static async list(file: BlockFile, size: number): Promise<ListedExtents | null> {
    const flat: number[] = []
    let coveredEnd = size
    const listed = await forEachDataExtent(file, 0, size, (from, to) => {
      if (flat.length >= MAX_LISTED_EXTENTS * 2) {
        coveredEnd = flat[flat.length - 1]!
        return false
      }
      flat.push(from, to)
    })
    return listed ? new ListedExtents(flat, coveredEnd) : null
  }

  /** The data extents inside [start, end), clipped to it; null when they were not all listed. */
  within(start: number, end: number): [number, number][] | null {
    if (end > this.coveredEnd) return null
    // The first extent that ends after `start` (extents are sorted and disjoint).
    let low = 0
    let high = this.flat.length / 2
    while (low < high) {
      const middle = (low + high) >>> 1
      if (this.flat[middle * 2 + 1]! <= start) low = middle + 1
      else high = middle
    }
    const extents: [number, number][] = []
    for (let index = low * 2; index < this.flat.length && this.flat[index]! < end; index += 2)
      extents.push([Math.max(start, this.flat[index]!), Math.min(end, this.flat[index + 1]!)])
    return extents
  }
}

/** Copy overlay bytes [start, end) into a plain-file base: data extents in the kernel, holes punched. */
export async function copyIntoRaw(
  disk: Overlay,
  base: BlockFile,
  start: number,
  end: number,
  listed: ListedExtents | null,
): Promise<void> {
  const image = disk.dataFile()
  const extents = listed?.within(start, end) ?? (await dataExtentsIn(image, start, end))
  if (!extents) {
    await copyRange(image, start, base, start, end - start)
    return
  }
  let cursor = start
  for (const [from, to] of extents) {
    if (from > cursor) await punchOrZero(base, cursor, from - cursor)
    await copyRange(image, from, base, from, to - from)
    cursor = to
  }
  if (cursor < end) await punchOrZero(base, cursor, end - cursor)
}

/** Copy overlay bytes [start, end) into a base through its driver (add-cow and other formats). */
export async function copyThroughDisk(
  disk: Overlay,
  target: Disk,
  start: number,
  end: number,
): Promise<void> {
  const image = disk.dataFile()
  const buffer = Buffer.allocUnsafe(Math.min(WINDOW_BYTES, end - start))
  for (let position = start; position < end; position += buffer.length) {
    const piece = buffer.subarray(0, Math.min(buffer.length, end - position))
    await image.readAt(piece, position)
    await target.write(position, piece)
  }
}

/**
 * Empty clusters [from, to) of the overlay once their data is durable in the base: clear their
 * bits and make the bitmap durable, then free the image file's blocks under them. Every
 * cluster of the range is unallocated by then (the commit copied each one whose bit was set),
 * so one hole over the whole range does it, and also frees what an interrupted earlier run
 * left behind; without hole punching, the cleared runs are overwritten with zeros. Returns the
 * punching, still running: the holes need no sync, since data left in unallocated clusters
 * after a crash is a leak, not a corruption. The image file gets its own handle, as the
 * punching may outlive the disk (the caller holds the locks until it ends). The punching is
 * returned inside an object so that awaiting this function does not wait for it.
 */
export async function emptyRange(
  disk: Overlay,
  from: number,
  to: number,
): Promise<{ punching: Promise<'punched' | 'zeroed'> }> {
  const cleared: [number, number][] = []
  disk.forEachAllocationRun(from, to, (first, stop, allocated) => {
    if (allocated) cleared.push([first, stop])
  })
  for (const [first, stop] of cleared) disk.markUnallocated(first, stop)
  await disk.flush()
  const image = await BlockFile.open(disk.dataFile().path, true)
  const size = disk.size
  const clusterSize = disk.allocationUnit
  const punching = (async () => {
    try {
      if (canListDataExtents()) {
        const start = from * clusterSize
        return await punchOrZero(image, start, Math.min(to * clusterSize, size) - start)
      }
      for (const [first, stop] of cleared) {
        const start = first * clusterSize
        await punchOrZero(image, start, Math.min(stop * clusterSize, size) - start)
      }
      return 'zeroed' as const
    } finally {
      await image.close()
    }
  })()
  // The punching is awaited only when the walk ends (combinePunches, or the job's tail); a
  // failure before then must not be an unhandled rejection, which ends the process. Whoever
  // awaits it still gets the error.
  punching.catch(() => undefined)
  return { punching }
}

/** One result for the punching of every phase: 'zeroed' if any phase had to write zeros. */
async function combinePunches(
  punches: Promise<'punched' | 'zeroed'>[],
): Promise<'punched' | 'zeroed'> {
  const results = await Promise.all(punches)
  return results.includes('zeroed') ? 'zeroed' : 'punched'
}

/**
 * `commit --rollback`: undo a journaled commit. If the commit finished copying, the overlay
 * first gets back every committed cluster it no longer holds (read from the base, which still
 * has them), then the base gets back its old bytes, bitmap bits, features and length; each
 * phase is recorded in the journal, so an interrupted rollback is finished by running it again.
 */
export async function rollbackCommit(options: RollbackOptions): Promise<RollbackResult> {
  const journal = await UndoJournal.open(options.journal, true)
  try {
    const header = journal.header
    const result: RollbackResult = {
      base: header.base,
      overlay: header.overlay,
      restoredBytes: 0,
      overlayClusters: 0,
      alreadyDone: false,
      dependents: [],
      unchecked: [],
    }
    if (journal.state === 'rolled-back') return { ...result, alreadyDone: true }
    const overlayExists = await stat(header.overlay).then(
      () => true,
      () => false,
    )
    return await runJob('rollback', { ...options, doing: 'roll back the commit' }, async (job) => {
      await job.lock([
        ...(await fileLocks(
          [header.base, ...(header.baseMetadataFile ? [header.baseDataFile] : [])],
          'exclusive',
        )),
        ...(overlayExists
          ? await fileLocks([header.overlay, header.overlayImage], 'exclusive')
          : []),
      ])
      if (journal.state !== 'rolling-back') {
        const after = journal.lastState?.baseAfter
        if (after) {
          const base = await openBase(header.base, header.baseFormat, true, options.policy)
          try {
            const changes = fingerprintChanges(after, await fingerprintBase(after.overlay, base))
            if (changes.length > 0 && !options.force) {
              throw new EngineError(
                'BASE_CHANGED',
                `The base ${header.base} changed after the commit (${changes.join('; ')}); a rollback would undo those changes too (pass --force to roll back anyway).`,
                { path: header.base, field: 'base fingerprint', value: changes[0] },
              )
            }
          } finally {
            await base.close()
          }
        }
        // The base is rewritten: the images that read through it see it change back.
        const radius = await guardCommitRadius({
          overlay: header.overlay,
          base: header.base,
          library: options.library,
          ...(options.policy ? { policy: options.policy } : {}),
          ...(options.signal ? { signal: options.signal } : {}),
          ...(options.force !== undefined ? { force: options.force } : {}),
          ...(options.ignoreUnchecked !== undefined
            ? { ignoreUnchecked: options.ignoreUnchecked }
            : {}),
          doing: `Rolling back the commit of ${header.overlay} into ${header.base}`,
        })
        result.dependents = radius.dependents
        result.unchecked = options.ignoreUnchecked ? [] : radius.unchecked
        if (journal.state === 'copied') {
          if (!overlayExists && !options.force) {
            throw new EngineError(
              'MISSING_FILE',
              `The overlay ${header.overlay} is gone; rolling back the base would lose the committed data for good (pass --force to roll back anyway).`,
              { path: header.overlay },
            )
          }
          if (overlayExists)
            result.overlayClusters = await restoreOverlay(journal, header.overlay, options)
        }
        await journal.setState({ state: 'rolling-back', at: new Date().toISOString() })
      }
      result.restoredBytes = await restoreBase(journal, options)
      await journal.setState({ state: 'rolled-back', at: new Date().toISOString() })
      await options.library.clearInterruptedCommit(header.overlay)
      if (overlayExists) {
        const disk = await openImage(header.overlay, {
          readOnly: true,
          format: overlayFormatOf(header),
          ...(options.policy ? { policy: options.policy } : {}),
        }).catch(() => null)
        if (disk) {
          await recordBaseFingerprint(disk, options.library).catch(() => null)
          await disk.close()
        }
      }
      return result
    })
  } finally {
    await journal.close().catch(() => undefined)
  }
}

/** The overlay's format as the journal records it (never probed: the journal names the file). */
function overlayFormatOf(header: UndoHeader): string {
  return header.overlayFormat ?? 'add-cow'
}

/** Open a base by its real path and recorded format, writable or read-only. */
async function openBase(
  path: string,
  format: string,
  readOnly: boolean,
  policy?: NamePolicy,
): Promise<Disk> {
  return openImage(path, { format, readOnly, ...(policy ? { policy } : {}) })
}

/** Give the overlay back every committed cluster it no longer marks, from the base. */
async function restoreOverlay(
  journal: UndoJournal,
  overlay: string,
  options: RollbackOptions,
): Promise<number> {
  const disk = await openImage(overlay, {
    readOnly: false,
    format: overlayFormatOf(journal.header),
    ...(options.policy ? { policy: options.policy } : {}),
  })
  try {
    const backing = disk.backing
    const { dataFile, forEachAllocationRun, markAllocated, isAllAllocated } = disk
    if (!backing || !dataFile || !forEachAllocationRun || !markAllocated || !isAllAllocated) {
      throw new EngineError(
        'NOT_CAPABLE',
        `${overlay} is no longer an add-cow overlay with a backing file.`,
        { path: overlay },
      )
    }
    if (isAllAllocated.call(disk)) return 0
    const image = dataFile.call(disk)
    const clusterSize = disk.allocationUnit
    let restored = 0
    const buffer = Buffer.allocUnsafe(WINDOW_BYTES)
    for (const [start, end] of journal.committed.intervals) {
      throwIfAborted(options.signal, 'rollback')
      const runs: [number, number][] = []
      forEachAllocationRun.call(
        disk,
        Math.floor(start / clusterSize),
        Math.ceil(Math.min(end, disk.size) / clusterSize),
        (first, stop, allocated) => {
          if (!allocated) runs.push([first, stop])
        },
      )
      for (const [first, stop] of runs) {
        const from = first * clusterSize
        const to = Math.min(stop * clusterSize, disk.size)
        for (let position = from; position < to; position += buffer.length) {
          const piece = buffer.subarray(0, Math.min(buffer.length, to - position))
          const available = Math.max(0, Math.min(piece.length, backing.size - position))
          if (available > 0) await backing.readInto(piece.subarray(0, available), position)
          piece.fill(0, available)
          await image.writeAt(piece, position)
        }
        markAllocated.call(disk, first, stop)
        restored += stop - first
      }
    }
    await disk.flush()
    return restored
  } finally {
    await disk.close()
  }
}

/** Put the journal's old bytes back into the base, then its bits, metadata and lengths. */
async function restoreBase(journal: UndoJournal, options: RollbackOptions): Promise<number> {
  const header = journal.header
  let restored = 0
  const total = journal.records.reduce((sum, record) => sum + record.length, 0)
  if (header.baseMetadataFile) {
    // Metadata first (add-cow: the features, so that the bitmap is read again), then the data.
    const driver = await loadDriver(header.baseFormat, header.base)
    if (header.baseFeaturesBefore !== null)
      await driver.restoreState?.(header.baseMetadataFile, header.baseFeaturesBefore)
    const base = await openBase(header.base, header.baseFormat, false, options.policy)
    try {
      assertAbilities(base, ['dataFile'], 'rollback')
      const image = base.dataFile!()
      const unit = base.allocationUnit
      for (const record of journal.records) {
        throwIfAborted(options.signal, 'rollback')
        const data = Buffer.allocUnsafe(record.length)
        await journal.readData(record, data)
        await image.writeAt(data, record.offset)
        if (!record.allocated && !base.isAllAllocated?.()) {
          base.markUnallocated?.(
            Math.floor(record.offset / unit),
            Math.ceil((record.offset + record.length) / unit),
          )
        }
        restored += record.length
        options.onProgress?.(restored, total)
      }
      await base.flush()
    } finally {
      await base.close()
    }
    await truncateIfLonger(header.baseDataFile, header.baseDataFileLengthBefore)
    if (header.baseMetadataLengthBefore !== null)
      await truncateIfLonger(header.baseMetadataFile, header.baseMetadataLengthBefore)
    return restored
  }
  const file = await BlockFile.open(header.baseDataFile, true)
  try {
    for (const record of journal.records) {
      throwIfAborted(options.signal, 'rollback')
      const data = Buffer.allocUnsafe(record.length)
      await journal.readData(record, data)
      await file.writeAt(data, record.offset)
      restored += record.length
      options.onProgress?.(restored, total)
    }
    if ((await file.length()) > header.baseDataFileLengthBefore)
      await file.truncate(header.baseDataFileLengthBefore)
    await file.sync()
  } finally {
    await file.close()
  }
  return restored
}

async function truncateIfLonger(path: string, length: number): Promise<void> {
  const file = await BlockFile.open(path, true)
  try {
    if ((await file.length()) > length) {
      await file.truncate(length)
      await file.sync()
    }
  } finally {
    await file.close()
  }
}
