import {
  assertAbilities,
  layerFiles,
  type AllocationVisitor,
  type Disk,
  type DiskAbility,
  type OperationOptions,
} from '../disk'
import { EngineError, throwIfAborted } from '../errors'
import { realPath } from '../fs'
import type { Library } from '../library'
import type { NamePolicy } from '../names'
import { chainOf, openImage } from '../open'
import { assertBaseUnchanged, checkBaseDrift } from './drift'
import { lockFiles, type FileLock, type LockMode } from './lock'

/**
 * The job mechanism: what commit, stream, rebase, repair (check -r) and upgrade (amend
 * --upgrade) share, so that each operation writes only its copy body (as QEMU's block jobs share
 * block/stream.c's and block/mirror.c's machinery).
 *
 * - {@link Job}: the locks of the files a job touches, computed by one rule
 *   ({@link layerLocks}), and the resources it must close, released in `finally` by
 *   {@link runJob} whatever happens.
 * - {@link runOverlayJob}: the preamble of a job on an image: open it, check that its format
 *   has the abilities the job needs (one NOT_CAPABLE message), guard against a base that
 *   changed since its fingerprint was recorded, then lock its chain.
 * - {@link walkAllocation}: the cluster walk: windows over the allocation runs a job wants,
 *   cancel through the AbortSignal between windows, a flush every so many written bytes (and
 *   before a cancel is reported, so what was done stays done), progress in bytes.
 *
 * A live job (issue 17: stream or commit inside the process that serves the image) reuses
 * {@link walkAllocation} on the served disk as it is, without {@link runOverlayJob}: the export
 * already opened and locked the chain. The walk reads the allocation of each window just before
 * visiting it, never a snapshot of the whole map, so a run a guest wrote meanwhile is skipped;
 * a body that writes must re-check the allocation and write under the disk's cluster locks (as
 * the add-cow driver's own writes do) so that a guest write always wins over the job's copy.
 */

/** A file to lock and how the job uses it. */
export interface LockRequest {
  path: string
  mode: LockMode
}

/**
 * The one lock rule: every file of every layer a job touches is locked, those of the layers it
 * writes exclusively, all others shared (nobody may write what the job reads). Paths are real
 * paths; a file named twice keeps its strongest mode.
 */
export async function layerLocks(
  layers: readonly Disk[],
  writes: (layer: Disk, index: number) => boolean,
): Promise<LockRequest[]> {
  const requests: LockRequest[] = []
  for (const [index, layer] of layers.entries()) {
    const mode: LockMode = writes(layer, index) ? 'exclusive' : 'shared'
    for (const file of layerFiles(layer)) requests.push({ path: await realPath(file), mode })
  }
  return requests
}

/** Requests for plain files (a file the job reads or writes outside any open disk). */
export async function fileLocks(files: readonly string[], mode: LockMode): Promise<LockRequest[]> {
  return Promise.all(files.map(async (file) => ({ path: await realPath(file), mode })))
}

/**
 * One running job: its name (for messages), its options (cancel, progress), the locks it holds
 * and the resources it closes at the end. Use through {@link runJob} or {@link runOverlayJob}.
 */
export class Job {
  private readonly locks: FileLock[] = []
  private readonly held = new Map<string, LockMode>()
  private readonly resources: { close(): Promise<void> }[] = []
  private keepLocks = false

  constructor(
    /** What the job is called in messages: 'commit', 'stream', 'rebase', 'repair', ... */
    readonly name: string,
    readonly options: OperationOptions,
    /** What a BUSY error says the user was about to do ("commit", "check it"). */
    private readonly doing: string = name,
  ) {}

  get signal(): AbortSignal | undefined {
    return this.options.signal
  }

  /** Throw ABORTED (naming the job) if the job was cancelled. */
  throwIfCancelled(): void {
    throwIfAborted(this.options.signal, this.name)
  }

  /**
   * Take the locks in `requests` that the job does not hold yet (all of them or none; a file
   * named twice keeps its strongest mode). A conflict is a BUSY error naming the file.
   */
  async lock(requests: readonly LockRequest[]): Promise<void> {
    const merged = new Map<string, LockMode>()
    for (const { path, mode } of requests) {
      if (merged.get(path) !== 'exclusive') merged.set(path, mode)
    }
    const wanted = [...merged]
      .filter(([path, mode]) => {
        const have = this.held.get(path)
        return have === undefined || (have === 'shared' && mode === 'exclusive')
      })
      .map(([path, mode]) => ({ path, mode }))
    if (wanted.length === 0) return
    const upgrades = wanted.filter(({ path }) => this.held.has(path))
    if (upgrades.length > 0) {
      throw new EngineError(
        'INTERNAL',
        `The ${this.name} job asked for ${upgrades[0]!.path} exclusively after locking it shared.`,
        { path: upgrades[0]!.path },
      )
    }
    const { locks } = await lockFiles(wanted, this.doing)
    this.locks.push(...locks)
    for (const { path, mode } of wanted) this.held.set(path, mode)
  }

  /** The kind of the first lock taken ('qemu-ofd', 'flock', 'lock-file'), or 'none'. */
  get lockKind(): string {
    return this.locks[0]?.kind ?? 'none'
  }

  /** Close `resource` when the job ends (last adopted, first closed). */
  adopt<T extends { close(): Promise<void> }>(resource: T): T {
    this.resources.push(resource)
    return resource
  }

  /** Stop closing `resource` at the end (the job closed it itself). */
  release(resource: { close(): Promise<void> }): void {
    const index = this.resources.lastIndexOf(resource)
    if (index >= 0) this.resources.splice(index, 1)
  }

  /**
   * Keep the locks past the end of the job: the caller releases them with the returned
   * function (commit frees the image file's blocks after it returned).
   */
  handOverLocks(): () => Promise<void> {
    this.keepLocks = true
    const locks = this.locks.splice(0)
    this.held.clear()
    return async () => {
      for (const lock of locks.reverse()) await lock.release().catch(() => undefined)
    }
  }

  /** Close every adopted resource (errors ignored), then release the locks. */
  async close(): Promise<void> {
    for (const resource of this.resources.splice(0).reverse())
      await resource.close().catch(() => undefined)
    if (this.keepLocks) return
    for (const lock of this.locks.splice(0).reverse()) await lock.release().catch(() => undefined)
    this.held.clear()
  }
}

/** Run `body` as a job named `name`: whatever happens, its resources close and its locks go. */
export async function runJob<T>(
  name: string,
  options: OperationOptions & { doing?: string },
  body: (job: Job) => Promise<T>,
): Promise<T> {
  const job = new Job(name, options, options.doing)
  try {
    return await body(job)
  } finally {
    await job.close()
  }
}

/** The preamble of a job on an image (see {@link runOverlayJob}). */
export interface OverlayJobOptions extends OperationOptions {
  /** The image the job works on. */
  path: string
  /** Its format, when known (otherwise probed, as for any file the user names). */
  format?: string
  /** Open it read-only (commit -d, upgrade); default: writable. */
  readOnly?: boolean
  policy?: NamePolicy
  /** The abilities the image's format must offer; the first one missing is NOT_CAPABLE. */
  needs: readonly DiskAbility[]
  /**
   * The drift guard: refuse (BASE_CHANGED) when the base changed since its fingerprint was
   * recorded in `library`, unless `accept`. `doing` completes "refusing to …".
   */
  drift?: { library: Library; accept?: boolean; doing: string }
  /** What a BUSY error says the user was about to do (default: the job's name). */
  doing?: string
}

/** A job on one open image: {@link Job} plus the disk, its reopening and its walk. */
export class OverlayJob extends Job {
  private current: Disk

  constructor(
    name: string,
    private readonly preamble: OverlayJobOptions,
    disk: Disk,
  ) {
    super(name, preamble, preamble.doing)
    this.current = this.adopt(disk)
  }

  /** The open image. */
  get disk(): Disk {
    return this.current
  }

  /** Open `path` as the preamble opens the image (same policy), closed when the job ends. */
  async open(path: string, options: { format: string; readOnly: boolean }): Promise<Disk> {
    return this.adopt(
      await openImage(path, {
        ...options,
        ...(this.preamble.policy ? { policy: this.preamble.policy } : {}),
      }),
    )
  }

  /**
   * Open the image again (after an ability that closes the disk, such as
   * clearAllAllocatedAndClose), with its format now known; the old disk must be closed.
   */
  async reopen(): Promise<Disk> {
    this.release(this.current)
    this.current = await this.open(this.current.path, {
      format: this.current.format,
      readOnly: this.current.readOnly,
    })
    return this.current
  }

  /** Flush and close the image before the job ends (its locks stay held until then). */
  async closeDisk(): Promise<void> {
    this.release(this.current)
    await this.current.close()
  }

  /**
   * Lock the image's chain by the one rule ({@link layerLocks}): the files of the layers the job
   * writes exclusively (the image itself unless it is open read-only, and every layer in
   * `written`), every other layer of its chain and of the chains in `also` shared.
   */
  async lockChain(also: readonly Disk[] = [], written: readonly Disk[] = []): Promise<void> {
    const top = this.current
    const layers = [...chainOf(top), ...also.flatMap((layer) => chainOf(layer))]
    await this.lock(
      await layerLocks(
        layers,
        (layer) => (layer === top && !top.readOnly) || written.includes(layer),
      ),
    )
  }

  /** {@link walkAllocation} over the job's image, with the job's cancel and progress. */
  walk(
    options: Omit<WalkOptions, 'operation' | keyof OperationOptions>,
    visit: (runs: AllocationRun[]) => Promise<number | void>,
  ): Promise<WalkResult> {
    return walkAllocation(
      this.current,
      { ...this.options, ...options, operation: this.name },
      visit,
    )
  }
}

/**
 * Run `body` on the image at `options.path`: open it (its chain through the name policy),
 * check its format has the abilities `needs` lists (NOT_CAPABLE names the first missing one),
 * compare its base with the recorded fingerprint (`drift`), and close everything at the end.
 * The body locks what it touches with {@link OverlayJob.lockChain} (most jobs first decide
 * whether there is anything to do), then walks the allocation with {@link OverlayJob.walk}.
 */
export async function runOverlayJob<T>(
  name: string,
  options: OverlayJobOptions,
  body: (job: OverlayJob) => Promise<T>,
): Promise<T> {
  const disk = await openImage(options.path, {
    readOnly: options.readOnly ?? false,
    ...(options.format ? { format: options.format } : {}),
    ...(options.policy ? { policy: options.policy } : {}),
  })
  const job = new OverlayJob(name, options, disk)
  try {
    assertAbilities(disk, options.needs, name)
    if (options.drift) {
      const report = await checkBaseDrift(disk, options.drift.library, options)
      assertBaseUnchanged(report, {
        force: options.drift.accept ?? false,
        doing: options.drift.doing,
      })
    }
    return await body(job)
  } finally {
    await job.close()
  }
}

/** One run of units the walk hands a job: units [first, stop), bytes [start, end). */
export interface AllocationRun {
  first: number
  stop: number
  start: number
  /** Clamped to the disk's size (the last cluster may be partial). */
  end: number
}

/** How {@link walkAllocation} walks. */
export interface WalkOptions extends OperationOptions {
  /** What a cancel names ("The stream was cancelled."). */
  operation: string
  /** `allocated`: the runs the layer holds (commit); `unallocated`: the runs it reads below. */
  select: 'allocated' | 'unallocated'
  /** Units [from, to) to walk; default: all of them. */
  from?: number
  to?: number
  /** Guest bytes looked at per window (default 16 MiB): one progress report, one cancel check. */
  windowBytes?: number
  /** Flush after the bodies wrote this many bytes (they return what they wrote), and on cancel. */
  flush?: { every: number; flush: () => Promise<void> }
  /** The allocation to walk, in units of `unit` bytes; default: the disk's own. */
  runs?: (first: number, end: number, visit: AllocationVisitor) => void
  unit?: number
  /** Progress total in bytes; default: the bytes of every selected run in [from, to). */
  total?: number
  /** Bytes already done before this walk (a walk split in parts reports one progress). */
  done?: number
  /** Called after every window, with or without runs (commit's emptying phases). */
  afterWindow?: (first: number, end: number) => Promise<void>
}

/** What a walk did. */
export interface WalkResult {
  /** Units and bytes of the selected runs visited. */
  units: number
  bytes: number
}

/** Bytes of guest space per window by default. */
export const WINDOW_BYTES = 16 * 1024 * 1024

/**
 * The cluster walk: visit the selected allocation runs of `disk` window by window. Before each
 * window the signal is checked (after a flush, when `flush` is given, so that a cancel leaves
 * every copied cluster marked); after each window with runs, progress is reported in bytes;
 * every `flush.every` bytes the bodies say they wrote, `flush.flush` runs. The allocation of a
 * window is read just before it is visited.
 */
export async function walkAllocation(
  disk: Disk,
  options: WalkOptions,
  visit: (runs: AllocationRun[]) => Promise<number | void>,
): Promise<WalkResult> {
  const unit = options.unit ?? disk.allocationUnit
  const runs =
    options.runs ??
    disk.forEachAllocationRun?.bind(disk) ??
    ((first: number, end: number, each: AllocationVisitor) => each(first, end, true))
  const count = Math.ceil(disk.size / unit)
  const from = options.from ?? 0
  const to = Math.min(options.to ?? count, count)
  const wanted = options.select === 'allocated'
  const perWindow = Math.max(1, Math.floor((options.windowBytes ?? WINDOW_BYTES) / unit))
  const collect = (first: number, end: number): AllocationRun[] => {
    const found: AllocationRun[] = []
    runs(first, end, (start, stop, allocated) => {
      if (allocated === wanted) {
        found.push({
          first: start,
          stop,
          start: start * unit,
          end: Math.min(stop * unit, disk.size),
        })
      }
    })
    return found
  }
  const total =
    options.total ?? collect(from, to).reduce((sum, run) => sum + (run.end - run.start), 0)
  let done = options.done ?? 0
  const result: WalkResult = { units: 0, bytes: 0 }
  let sinceFlush = 0
  for (let first = from; first < to; first += perWindow) {
    if (options.signal?.aborted) {
      await options.flush?.flush()
      throwIfAborted(options.signal, options.operation)
    }
    const end = Math.min(to, first + perWindow)
    const window = collect(first, end)
    if (window.length > 0) {
      sinceFlush += (await visit(window)) ?? 0
      for (const run of window) {
        result.units += run.stop - run.first
        result.bytes += run.end - run.start
        done += run.end - run.start
      }
      if (options.flush && sinceFlush >= options.flush.every) {
        await options.flush.flush()
        sinceFlush = 0
      }
      options.onProgress?.(Math.min(done, total), total)
    }
    await options.afterWindow?.(first, end)
  }
  return result
}
