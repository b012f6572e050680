import { randomBytes } from 'node:crypto'
import { EngineError, isEngineError } from '../engine/errors'
import type { Channel } from '../../shared/ipc/channels'
import type { JobInfo } from '../../shared/ipc/contract'
import { toIpcError } from './errors'
import type { EventBus } from './events'
import type { Logger } from './logger'

/** What a running job gets: its id, its cancel signal and a progress reporter. */
export interface JobRun {
  readonly id: string
  readonly signal: AbortSignal
  /** Report progress; cheap to call often (events are throttled). */
  progress(done: number, total: number): void
  /** Say what a long-lived job is doing now (the URI it serves, the VM's pid); sent at once. */
  describe(detail: string): void
}

/**
 * Thrown by a job body whose work was cancelled outside the app (the live job it follows was
 * stopped with `addcow job cancel`): the job ends cancelled, as when its own Cancel is pressed,
 * with this error's message saying who cancelled it.
 */
export class JobCancelledElsewhere extends EngineError {
  constructor(message: string) {
    super('ABORTED', message)
  }
}

/** Time source and timers, injectable so throttling is tested without waiting. */
export interface JobClock {
  now(): number
  setTimeout(callback: () => void, milliseconds: number): unknown
  clearTimeout(handle: unknown): void
}

/** The real clock. */
export const SYSTEM_CLOCK: JobClock = {
  now: () => Date.now(),
  setTimeout: (callback, milliseconds) => {
    const handle = setTimeout(callback, milliseconds)
    handle.unref?.()
    return handle
  },
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
}

/** How the job manager behaves. */
export interface JobManagerOptions {
  bus: EventBus
  log: Logger
  clock?: JobClock
  /** Least time between two progress events of one job (the final state is always sent). */
  progressIntervalMs?: number
  /** Finished jobs kept for the jobs list. */
  keepFinished?: number
  /** Jobs that may run at once; more are refused with BUSY. */
  maxRunning?: number
}

/** Time window over which the rate (and so the time left) is measured. */
const RATE_WINDOW_MS = 10_000
/** Shortest span over which a rate is reported at all. */
const MIN_RATE_SPAN_MS = 500

interface JobRecord {
  info: JobInfo
  controller: AbortController
  settled: Promise<void>
  lastEmit: number
  timer: unknown
  samples: { time: number; done: number }[]
}

/**
 * Runs long operations as jobs: each gets an id at once, reports throttled progress (with a
 * rate and the time left) and ends with `jobs:done` or `jobs:failed`. Any job can be cancelled
 * through its AbortSignal. Jobs belong to main, not to a window: a window that closes or
 * reloads finds them again with `list()`.
 */
export class JobManager {
  private readonly jobs = new Map<string, JobRecord>()
  private readonly bus: EventBus
  private readonly log: Logger
  private readonly clock: JobClock
  private readonly interval: number
  private readonly keepFinished: number
  private readonly maxRunning: number

  constructor(options: JobManagerOptions) {
    this.bus = options.bus
    this.log = options.log
    this.clock = options.clock ?? SYSTEM_CLOCK
    this.interval = options.progressIntervalMs ?? 250
    this.keepFinished = options.keepFinished ?? 100
    this.maxRunning = options.maxRunning ?? 16
  }

  /** Start `run` as a job and return its description at once. */
  start<T>(
    channel: Channel,
    title: string,
    unit: 'bytes' | 'steps',
    run: (job: JobRun) => Promise<T>,
    about: { image?: string | undefined; vmJobId?: string | undefined } = {},
  ): JobInfo {
    if (this.runningCount >= this.maxRunning) {
      throw new EngineError(
        'BUSY',
        `${this.maxRunning} jobs are already running; wait for one to finish.`,
        {
          field: 'jobs',
          value: this.runningCount,
        },
      )
    }
    let id = randomBytes(8).toString('hex')
    while (this.jobs.has(id)) id = randomBytes(8).toString('hex')
    const controller = new AbortController()
    const now = this.clock.now()
    const record: JobRecord = {
      info: {
        id,
        channel,
        title,
        state: 'running',
        startedAt: now,
        finishedAt: null,
        progress: { done: 0, total: 0, unit, fraction: 0, bytesPerSecond: null, secondsLeft: null },
        detail: null,
        error: null,
        ...(about.image === undefined ? {} : { image: about.image }),
        ...(about.vmJobId === undefined ? {} : { vmJobId: about.vmJobId }),
      },
      controller,
      settled: Promise.resolve(),
      lastEmit: now,
      timer: null,
      samples: [{ time: now, done: 0 }],
    }
    this.jobs.set(id, record)
    this.bus.emit('jobs:started', snapshot(record.info))
    const handle: JobRun = {
      id,
      signal: controller.signal,
      progress: (done, total) => this.onProgress(record, done, total),
      describe: (detail) => {
        if (isFinished(record.info.state)) return
        record.info.detail = detail.slice(0, 1000)
        this.emitProgress(record)
      },
    }
    record.settled = (async () => {
      try {
        // Run on a later tick so the caller gets the job before any of its events but started.
        await Promise.resolve()
        const result = await run(handle)
        this.finish(record, 'done', null)
        this.bus.emit('jobs:done', { job: snapshot(record.info), result })
      } catch (error) {
        const elsewhere = error instanceof JobCancelledElsewhere
        const cancelled =
          elsewhere ||
          (controller.signal.aborted && (isEngineError(error, 'ABORTED') || !isEngineError(error)))
        const failure = cancelled
          ? {
              code: 'ABORTED' as const,
              message: elsewhere ? `${title}: ${error.message}` : `${title}: cancelled.`,
            }
          : toIpcError(error, this.log, `job ${title}`)
        this.finish(record, cancelled ? 'cancelled' : 'failed', failure)
        this.bus.emit('jobs:failed', { job: snapshot(record.info) })
      }
    })()
    return snapshot(record.info)
  }

  /** Every job, oldest first. */
  list(): JobInfo[] {
    return [...this.jobs.values()].map((record) => snapshot(record.info))
  }

  /** One job, or undefined. */
  get(id: string): JobInfo | undefined {
    const record = this.jobs.get(id)
    return record ? snapshot(record.info) : undefined
  }

  /**
   * Say that a running job now works on `image` (a VM whose export serves a new top after a
   * live snapshot or an active commit), so a page that looks for the job by its image finds it
   * after a reload. A no-op for a job that ended or is unknown.
   */
  setImage(id: string, image: string): void {
    const record = this.jobs.get(id)
    if (!record || isFinished(record.info.state) || record.info.image === image) return
    record.info.image = image
    this.emitProgress(record)
  }

  /** Ask a job to stop. `cancelled` is false when it had already finished. */
  cancel(id: string): { cancelled: boolean; job: JobInfo } {
    const record = this.jobs.get(id)
    if (!record) {
      throw new EngineError('NOT_FOUND', `There is no job ${id}.`, { field: 'jobId', value: id })
    }
    if (record.info.state !== 'running') return { cancelled: false, job: snapshot(record.info) }
    record.info.state = 'cancelling'
    record.controller.abort()
    this.emitProgress(record)
    return { cancelled: true, job: snapshot(record.info) }
  }

  /** Forget finished jobs; returns how many. */
  clearFinished(): number {
    let removed = 0
    for (const [id, record] of this.jobs) {
      if (isFinished(record.info.state)) {
        this.jobs.delete(id)
        removed++
      }
    }
    return removed
  }

  /** Resolves when the job has finished (whatever the outcome). */
  async settled(id: string): Promise<void> {
    await this.jobs.get(id)?.settled
  }

  /** Cancel every running job and wait until all have left their files consistent. */
  async cancelAll(): Promise<void> {
    const waits: Promise<void>[] = []
    for (const record of this.jobs.values()) {
      if (record.info.state === 'running') this.cancel(record.info.id)
      waits.push(record.settled)
    }
    await Promise.all(waits)
  }

  /** Jobs running or winding down. */
  get runningCount(): number {
    let count = 0
    for (const record of this.jobs.values()) if (!isFinished(record.info.state)) count++
    return count
  }

  private onProgress(record: JobRecord, done: number, total: number): void {
    if (isFinished(record.info.state)) return
    if (!Number.isFinite(done) || !Number.isFinite(total) || done < 0 || total < 0) return
    const now = this.clock.now()
    const progress = record.info.progress
    progress.done = done
    progress.total = total
    progress.fraction = total > 0 ? Math.min(1, done / total) : 0
    const samples = record.samples
    const last = samples[samples.length - 1]
    if (!last || now - last.time >= this.interval || done < last.done) {
      if (last && done < last.done) samples.length = 0
      samples.push({ time: now, done })
      while (samples.length > 2 && now - samples[0]!.time > RATE_WINDOW_MS) samples.shift()
    }
    const oldest = samples[0]
    const span = oldest ? now - oldest.time : 0
    if (oldest && span >= MIN_RATE_SPAN_MS && done >= oldest.done) {
      const rate = ((done - oldest.done) / span) * 1000
      progress.bytesPerSecond = progress.unit === 'bytes' ? rate : null
      progress.secondsLeft = rate > 0 && total >= done ? (total - done) / rate : null
    }
    if (now - record.lastEmit >= this.interval) {
      this.emitProgress(record)
    } else if (record.timer === null) {
      record.timer = this.clock.setTimeout(
        () => {
          record.timer = null
          if (!isFinished(record.info.state)) this.emitProgress(record)
        },
        record.lastEmit + this.interval - now,
      )
    }
  }

  private emitProgress(record: JobRecord): void {
    if (record.timer !== null) {
      this.clock.clearTimeout(record.timer)
      record.timer = null
    }
    record.lastEmit = this.clock.now()
    this.bus.emit('jobs:progress', snapshot(record.info))
  }

  private finish(
    record: JobRecord,
    state: 'done' | 'failed' | 'cancelled',
    error: JobInfo['error'],
  ): void {
    if (record.timer !== null) {
      this.clock.clearTimeout(record.timer)
      record.timer = null
    }
    const info = record.info
    info.state = state
    info.error = error
    info.finishedAt = this.clock.now()
    info.progress.secondsLeft = state === 'done' ? 0 : null
    if (state === 'done') {
      if (info.progress.total > 0) info.progress.done = info.progress.total
      info.progress.fraction = 1
    }
    this.prune()
  }

  private prune(): void {
    const finished = [...this.jobs.values()].filter((record) => isFinished(record.info.state))
    for (const record of finished.slice(0, Math.max(0, finished.length - this.keepFinished))) {
      this.jobs.delete(record.info.id)
    }
  }
}

function isFinished(state: JobInfo['state']): boolean {
  return state === 'done' || state === 'failed' || state === 'cancelled'
}

function snapshot(info: JobInfo): JobInfo {
  return { ...info, progress: { ...info.progress }, error: info.error ? { ...info.error } : null }
}
