import { stat } from 'node:fs/promises'
import { dirname } from 'node:path'
import type { Disk, OperationOptions } from '../disk'
import { EngineError, throwIfAborted } from '../errors'
import { BlockFile } from '../file'
import { realPath } from '../fs'
import { AddCowDisk } from '../formats/add-cow/add-cow-disk'
import { FEATURE_ALL_ALLOCATED, geometry } from '../formats/add-cow/header'
import type { Library } from '../library'
import { assertFollowable, judgeName, STRICT_POLICY, type NamePolicy } from '../names'
import { openImage } from '../open'
import { runLimited } from '../extents'
import { fillBitmap, writeCompatibleFeatures } from './add-cow-edit'
import { findDependents, type DependentImage } from './blast-radius'
import {
  assertBaseUnchanged,
  checkBaseDrift,
  fingerprintBase,
  fingerprintChanges,
  recordBaseFingerprint,
  realPathOf,
} from './drift'
import { lockFiles } from './lock'
import { canListDataExtents, copyRange, dataExtentsIn, punchOrZero } from '../formats/common/sparse'
import { UndoJournal, type UndoHeader } from './undo-journal'

/** Bytes of overlay data handled per step (one journal sync, one progress report). */
const BATCH_BYTES = 16 * 1024 * 1024
/** Kernel copies in flight at once into a raw base (on the libuv thread pool). */
const COPY_PARALLELISM = 4
/**
 * A commit without an undo journal empties the overlay in this many phases of its guest range,
 * each one's holes punched while the next phase copies: freeing a fragmented image file's
 * blocks costs about as much as the copy on ext4 (tests/bench/commit-stream.ts), and this way
 * most of it overlaps the copy. Each phase adds a sync of the base and of the bitmap.
 */
const EMPTYING_PHASES = 8

/** What `addcow commit` needs. */
export interface CommitOptions extends OperationOptions {
  /** The add-cow overlay whose clusters go into its backing file. */
  overlay: string
  /** Keep the overlay's contents afterwards (qemu-img commit -d); the overlay stays read-only. */
  keep?: boolean
  /** Commit even though other images use the same base (their guest view changes). */
  force?: boolean
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
  /** Other images on the same base (non-empty only with `force`). */
  dependents: DependentImage[]
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
  /** Roll back even though the base changed after the commit, or the overlay is gone. */
  force?: boolean
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
}

/** Refuse unless the overlay can be committed; returns its open disk. */
async function openOverlay(path: string, options: CommitOptions): Promise<AddCowDisk> {
  const disk = await openImage(path, {
    readOnly: options.keep ?? false,
    ...(options.policy ? { policy: options.policy } : {}),
  })
  if (!(disk instanceof AddCowDisk)) {
    await disk.close()
    throw new EngineError(
      'NOT_CAPABLE',
      `${disk.path} is a ${disk.format} image; commit works on add-cow overlays.`,
      {
        path: disk.path,
        field: 'format',
        value: disk.format,
      },
    )
  }
  if (disk.header.backingName === null) {
    await disk.close()
    throw new EngineError('BAD_ARGUMENT', `${disk.path} has no backing file to commit into.`, {
      path: disk.path,
      field: 'backing name',
    })
  }
  return disk
}

/** The overlay with ALL_ALLOCATED set hands over to a full bitmap first (guest view unchanged). */
async function normalizeAllAllocated(
  disk: AddCowDisk,
  options: CommitOptions,
): Promise<AddCowDisk> {
  if (!disk.allAllocated || options.keep) return disk
  await fillBitmap(disk.metadataFile, disk.header, disk.size)
  await writeCompatibleFeatures(
    disk.metadataFile,
    disk.header.compatibleFeatures & ~FEATURE_ALL_ALLOCATED,
  )
  const path = disk.path
  await disk.close()
  return openOverlay(path, options)
}

/** Open the base writable (or read-only for inspection) by its real path and recorded format. */
async function openBase(
  path: string,
  format: string,
  readOnly: boolean,
  policy?: NamePolicy,
): Promise<Disk> {
  return openImage(path, { format, readOnly, ...(policy ? { policy } : {}) })
}

/** Clusters in one window of {@link forEachAllocatedWindow}: BATCH_BYTES of guest space. */
function windowClusters(disk: AddCowDisk): number {
  return Math.max(1, Math.floor(BATCH_BYTES / disk.clusterSize))
}

/**
 * Visit the allocated byte ranges of clusters [from, to) of `disk` window by window, BATCH_BYTES
 * of clusters at a time.
 */
async function forEachAllocatedWindow(
  disk: AddCowDisk,
  visit: (runs: [number, number][]) => Promise<void>,
  signal?: AbortSignal,
  from = 0,
  to = disk.geometry.clusters,
): Promise<void> {
  const clusterSize = disk.clusterSize
  const perWindow = windowClusters(disk)
  for (let first = from; first < to; first += perWindow) {
    throwIfAborted(signal, 'commit')
    const runs: [number, number][] = []
    disk.forEachAllocationRun(first, Math.min(to, first + perWindow), (start, stop, allocated) => {
      if (allocated) runs.push([start * clusterSize, Math.min(stop * clusterSize, disk.size)])
    })
    if (runs.length > 0) await visit(runs)
  }
}

/**
 * `commit`: copy every allocated cluster of an add-cow overlay into its direct backing file
 * (raw or add-cow, or any writable format), then, unless `keep`, empty the overlay.
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
  const tail: CommitTail = { emptying: null, release: null }
  try {
    const result = await commitAndClose(options, tail)
    // The base changed on purpose: record its new fingerprint for this overlay (reopened, so
    // that no cached bitmap of the old base is read), while the image file's blocks are freed.
    const record = async (): Promise<void> => {
      const disk = await openImage(result.overlay, {
        readOnly: true,
        format: 'add-cow',
        ...(options.policy ? { policy: options.policy } : {}),
      })
      try {
        await recordBaseFingerprint(disk, options.library)
      } finally {
        await disk.close()
      }
    }
    const [emptiedBy] = await Promise.all([tail.emptying ?? Promise.resolve(null), record()])
    return { ...result, emptiedBy }
  } finally {
    await tail.emptying?.catch(() => undefined)
    await tail.release?.()
  }
}

/** What outlives commitAndClose: the hole punching still running, and the locks it needs. */
interface CommitTail {
  emptying: Promise<'punched' | 'zeroed'> | null
  release: (() => Promise<void>) | null
}

async function commitAndClose(options: CommitOptions, tail: CommitTail): Promise<CommitResult> {
  let disk = await openOverlay(options.overlay, options)
  let target: Disk | null = null
  let rawFile: BlockFile | null = null
  let journal: UndoJournal | null = null
  try {
    const below = disk.backing
    // With ALL_ALLOCATED the driver does not open the backing file; open it for the checks.
    const base = below ?? (await openOverlayBase(disk, options))
    const basePath = await realPathOf(base)
    const baseFormat = base.format
    const baseFiles =
      base instanceof AddCowDisk ? [basePath, await realPath(base.imageFile.path)] : [basePath]
    if (!below) await base.close()
    // An ALL_ALLOCATED overlay never reads its base: the check reports 'not-consulted'.
    const drift = await checkBaseDrift(disk, options.library, options)
    assertBaseUnchanged(drift, { force: options.acceptBase ?? false, doing: 'commit into it' })

    const overlayPath = await realPathOf(disk)
    const radius = await findDependents(basePath, {
      library: options.library,
      folders: [dirname(overlayPath)],
      exclude: [overlayPath],
      ...(options.signal ? { signal: options.signal } : {}),
    })
    if (radius.dependents.length > 0 && !options.force) {
      const names = radius.dependents.map((entry) => entry.path)
      throw new EngineError(
        'CONFIRMATION_REQUIRED',
        `Committing ${overlayPath} into ${basePath} would change the guest view of ${names.length} other image(s) that use it as their base: ${names.slice(0, 5).join(', ')}${names.length > 5 ? ', …' : ''}; pass --force to commit anyway.`,
        { path: basePath, field: 'dependents', value: names },
      )
    }

    const overlayFiles = [overlayPath, await realPath(disk.imageFile.path)]
    const locks = await lockFiles(
      [
        ...baseFiles.map((path) => ({ path, mode: 'exclusive' as const })),
        ...overlayFiles.map((path) => ({
          path,
          mode: options.keep ? ('shared' as const) : ('exclusive' as const),
        })),
      ],
      'commit',
    )
    tail.release = locks.release
    disk = await normalizeAllAllocated(disk, options)

    target = await openBase(basePath, baseFormat, false, options.policy)
    if (!target.capabilities.write) {
      throw new EngineError(
        'NOT_CAPABLE',
        `${basePath} is a ${baseFormat} image, which this tool cannot write.`,
        { path: basePath },
      )
    }
    if (options.undo !== undefined && !(target instanceof AddCowDisk) && baseFormat !== 'raw') {
      throw new EngineError(
        'NOT_CAPABLE',
        `An undo journal needs a raw or add-cow base; ${basePath} is ${baseFormat}.`,
        { path: basePath },
      )
    }

    let resumed = false
    if (options.undo !== undefined) {
      const opened = await openOrCreateJournal(options.undo, disk, overlayPath, target, basePath)
      journal = opened.journal
      resumed = opened.resumed
    }

    let grewBase: [number, number] | null = null
    if (disk.size > target.size) {
      grewBase = [target.size, disk.size]
      target = await growBase(target, basePath, baseFormat, disk.size, options.policy)
    }
    if (baseFormat === 'raw') rawFile = await BlockFile.open(target.path, true)

    const total = disk.allocatedClusters * disk.clusterSize
    let done = 0
    let clusters = 0
    const writer = target
    const file = rawFile
    const syncBase = (): Promise<void> => (file ? file.sync() : writer.flush())
    // Without an undo journal the overlay is emptied phase by phase (see emptyRange): each
    // phase's holes are punched while the next phase copies. With a journal it is emptied at
    // the end, after the journal says 'copied', which is what its rollback relies on.
    const phased = !options.keep && !journal
    const clusterCount = disk.geometry.clusters
    const perWindow = windowClusters(disk)
    const phaseClusters = phased
      ? Math.ceil(Math.ceil(clusterCount / EMPTYING_PHASES) / perWindow) * perWindow
      : clusterCount
    const punches: Promise<'punched' | 'zeroed'>[] = []
    try {
      for (let from = 0; from < clusterCount; from += phaseClusters) {
        const to = Math.min(clusterCount, from + phaseClusters)
        await forEachAllocatedWindow(
          disk,
          async (runs) => {
            if (journal) await journalRuns(journal, writer, runs)
            await runLimited(
              runs.map(([start, end]) => async () => {
                if (file) await copyIntoRaw(disk, file, start, end)
                else await copyThroughDisk(disk, writer, start, end)
                done += end - start
                clusters += Math.ceil((end - start) / disk.clusterSize)
              }),
              file ? COPY_PARALLELISM : 1,
            )
            options.onProgress?.(Math.min(done, total), total)
          },
          options.signal,
          from,
          to,
        )
        if (phased) {
          throwIfAborted(options.signal, 'commit')
          await syncBase()
          punches.push((await emptyRange(disk, from, to)).punching)
        }
      }
    } finally {
      // Punching never outlives this function's caller: on failure, wait for what started.
      if (punches.length > 0) tail.emptying = combinePunches(punches)
    }
    if (!phased) {
      await syncBase()
      if (journal) {
        // Also after a resumed run that copied more: the record carries the base's latest fingerprint.
        await journal.setState({
          state: 'copied',
          at: new Date().toISOString(),
          baseAfter: await fingerprintBase(overlayPath, target),
        })
      }
      if (!options.keep) {
        throwIfAborted(options.signal, 'commit')
        tail.emptying = (await emptyRange(disk, 0, clusterCount)).punching
      }
    }
    options.onProgress?.(total, total)
    return {
      overlay: overlayPath,
      base: basePath,
      baseFormat,
      clusters,
      bytes: done,
      emptied: !options.keep,
      emptiedBy: null,
      dependents: radius.dependents,
      undo: journal?.path ?? null,
      resumed,
      grewBase,
      lockKind: locks.locks[0]?.kind ?? 'none',
    }
  } finally {
    await rawFile?.close().catch(() => undefined)
    await target?.close().catch(() => undefined)
    await journal?.close().catch(() => undefined)
    await disk.close().catch(() => undefined)
  }
}

/** Open the base of an ALL_ALLOCATED overlay (the driver skips it) by its stored name. */
async function openOverlayBase(disk: AddCowDisk, options: CommitOptions): Promise<Disk> {
  const verdict = await judgeName(
    disk.path,
    disk.header.backingName ?? '',
    disk.header.backingFormat,
    options.policy ?? STRICT_POLICY,
  )
  assertFollowable(disk.path, 'backing file', verdict)
  return openBase(verdict.resolved, disk.header.backingFormat ?? 'raw', true, options.policy)
}

async function openOrCreateJournal(
  path: string,
  disk: AddCowDisk,
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
  const addCow = target instanceof AddCowDisk ? target : null
  const dataFile = addCow ? addCow.imageFile.path : target.path
  const header: UndoHeader = {
    kind: 'addcow-commit-undo',
    createdAt: new Date().toISOString(),
    overlay: overlayPath,
    overlayImage: await realPath(disk.imageFile.path),
    overlayClusterSize: disk.clusterSize,
    base: basePath,
    baseFormat: addCow ? 'add-cow' : 'raw',
    baseDataFile: await realPath(dataFile),
    baseMetadataFile: addCow ? basePath : null,
    baseClusterSize: addCow ? addCow.clusterSize : 1,
    baseFeaturesBefore: addCow ? `0x${addCow.header.compatibleFeatures.toString(16)}` : null,
    baseSizeBefore: target.size,
    baseDataFileLengthBefore: (await stat(dataFile)).size,
    baseMetadataLengthBefore: addCow ? (await stat(basePath)).size : null,
  }
  return { journal: await UndoJournal.create(path, header), resumed: false }
}

/** Grow the base to `size` (a commit of a larger overlay, as qemu-img does); returns it reopened. */
async function growBase(
  target: Disk,
  basePath: string,
  format: string,
  size: number,
  policy?: NamePolicy,
): Promise<Disk> {
  if (target instanceof AddCowDisk) {
    const metaLength = geometry(target.header.clusterBits, size).fileLength
    const imagePath = target.imageFile.path
    await target.close()
    const image = await BlockFile.open(imagePath, true)
    try {
      await image.truncate(size)
      await image.sync()
    } finally {
      await image.close()
    }
    const meta = await BlockFile.open(basePath, true)
    try {
      if ((await meta.length()) < metaLength) await meta.truncate(metaLength)
      await meta.sync()
    } finally {
      await meta.close()
    }
  } else if (format === 'raw') {
    await target.close()
    const file = await BlockFile.open(basePath, true)
    try {
      await file.truncate(size)
      await file.sync()
    } finally {
      await file.close()
    }
  } else {
    throw new EngineError(
      'NOT_CAPABLE',
      `${basePath} (${format}) is smaller than the overlay and cannot be grown by this tool.`,
      {
        path: basePath,
        field: 'virtual size',
        value: target.size,
      },
    )
  }
  return openBase(basePath, format, false, policy)
}

/** Save, before they are overwritten, the base bytes under `runs` that the journal lacks. */
async function journalRuns(
  journal: UndoJournal,
  target: Disk,
  runs: [number, number][],
): Promise<void> {
  const addCow = target instanceof AddCowDisk ? target : null
  const unit = addCow ? addCow.clusterSize : 1
  const source = addCow ? addCow.imageFile : await BlockFile.open(target.path, false)
  try {
    for (const [start, end] of runs) {
      for (const [from, to] of journal.committed.missing(start, end))
        journal.addRange(from, to - from)
      const low = Math.floor(start / unit) * unit
      const high = Math.min(Math.ceil(end / unit) * unit, target.size)
      for (const [from, to] of journal.saved.missing(low, high)) {
        if (!addCow) {
          const data = Buffer.allocUnsafe(to - from)
          await source.readAt(data, from)
          journal.addData(from, data, false)
          continue
        }
        const pending: Promise<void>[] = []
        addCow.forEachAllocationRun(
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
  } finally {
    if (!addCow) await source.close()
  }
}

/** Copy overlay bytes [start, end) into a raw base: data extents in the kernel, holes punched. */
async function copyIntoRaw(
  disk: AddCowDisk,
  base: BlockFile,
  start: number,
  end: number,
): Promise<void> {
  const extents = await dataExtentsIn(disk.imageFile, start, end)
  if (!extents) {
    await copyRange(disk.imageFile, start, base, start, end - start)
    return
  }
  let cursor = start
  for (const [from, to] of extents) {
    if (from > cursor) await punchOrZero(base, cursor, from - cursor)
    await copyRange(disk.imageFile, from, base, from, to - from)
    cursor = to
  }
  if (cursor < end) await punchOrZero(base, cursor, end - cursor)
}

/** Copy overlay bytes [start, end) into a base through its driver (add-cow and other formats). */
async function copyThroughDisk(
  disk: AddCowDisk,
  target: Disk,
  start: number,
  end: number,
): Promise<void> {
  const buffer = Buffer.allocUnsafe(Math.min(BATCH_BYTES, end - start))
  for (let position = start; position < end; position += buffer.length) {
    const piece = buffer.subarray(0, Math.min(buffer.length, end - position))
    await disk.imageFile.readAt(piece, position)
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
async function emptyRange(
  disk: AddCowDisk,
  from: number,
  to: number,
): Promise<{ punching: Promise<'punched' | 'zeroed'> }> {
  const cleared: [number, number][] = []
  disk.forEachAllocationRun(from, to, (first, stop, allocated) => {
    if (allocated) cleared.push([first, stop])
  })
  for (const [first, stop] of cleared) disk.markUnallocated(first, stop)
  await disk.flush()
  const image = await BlockFile.open(disk.imageFile.path, true)
  const size = disk.size
  const clusterSize = disk.clusterSize
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
  let release: (() => Promise<void>) | null = null
  try {
    const header = journal.header
    const result: RollbackResult = {
      base: header.base,
      overlay: header.overlay,
      restoredBytes: 0,
      overlayClusters: 0,
      alreadyDone: false,
    }
    if (journal.state === 'rolled-back') return { ...result, alreadyDone: true }
    const overlayExists = await stat(header.overlay).then(
      () => true,
      () => false,
    )
    const policy = options.policy ? { policy: options.policy } : {}
    const locks = await lockFiles(
      [
        { path: header.base, mode: 'exclusive' },
        ...(header.baseMetadataFile
          ? [{ path: header.baseDataFile, mode: 'exclusive' as const }]
          : []),
        ...(overlayExists
          ? [
              { path: header.overlay, mode: 'exclusive' as const },
              { path: header.overlayImage, mode: 'exclusive' as const },
            ]
          : []),
      ],
      'roll back the commit',
    )
    release = locks.release
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
    if (overlayExists) {
      const disk = await openImage(header.overlay, {
        readOnly: true,
        format: 'add-cow',
        ...policy,
      }).catch(() => null)
      if (disk) {
        await recordBaseFingerprint(disk, options.library).catch(() => null)
        await disk.close()
      }
    }
    return result
  } finally {
    await journal.close().catch(() => undefined)
    await release?.()
  }
}

/** Give the overlay back every committed cluster it no longer marks, from the base. */
async function restoreOverlay(
  journal: UndoJournal,
  overlay: string,
  options: RollbackOptions,
): Promise<number> {
  const disk = await openImage(overlay, {
    readOnly: false,
    format: 'add-cow',
    ...(options.policy ? { policy: options.policy } : {}),
  })
  try {
    if (!(disk instanceof AddCowDisk) || !disk.backing) {
      throw new EngineError(
        'NOT_CAPABLE',
        `${overlay} is no longer an add-cow overlay with a backing file.`,
        { path: overlay },
      )
    }
    if (disk.allAllocated) return 0
    const backing = disk.backing
    const clusterSize = disk.clusterSize
    let restored = 0
    const buffer = Buffer.allocUnsafe(BATCH_BYTES)
    for (const [start, end] of journal.committed.intervals) {
      throwIfAborted(options.signal, 'rollback')
      const runs: [number, number][] = []
      disk.forEachAllocationRun(
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
          await disk.imageFile.writeAt(piece, position)
        }
        disk.markAllocated(first, stop)
        restored += stop - first
      }
    }
    await disk.flush()
    return restored
  } finally {
    await disk.close()
  }
}

/** Put the journal's old bytes back into the base, then its bits, features and lengths. */
async function restoreBase(journal: UndoJournal, options: RollbackOptions): Promise<number> {
  const header = journal.header
  let restored = 0
  const total = journal.records.reduce((sum, record) => sum + record.length, 0)
  if (header.baseFormat === 'add-cow' && header.baseMetadataFile) {
    const meta = await BlockFile.open(header.baseMetadataFile, true)
    try {
      const before = BigInt(header.baseFeaturesBefore ?? '0')
      await writeCompatibleFeatures(meta, before)
    } finally {
      await meta.close()
    }
    const base = await openBase(header.base, 'add-cow', false, options.policy)
    try {
      if (!(base instanceof AddCowDisk))
        throw new EngineError('FORMAT_MISMATCH', `${header.base} is no longer an add-cow file.`, {
          path: header.base,
        })
      const unit = base.clusterSize
      for (const record of journal.records) {
        throwIfAborted(options.signal, 'rollback')
        const data = Buffer.allocUnsafe(record.length)
        await journal.readData(record, data)
        await base.imageFile.writeAt(data, record.offset)
        if (!record.allocated && !base.allAllocated) {
          base.markUnallocated(
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
