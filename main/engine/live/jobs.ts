import type { LiveJob } from '../../../shared/live-control'
import type { OperationOptions } from '../disk'
import { EngineError, isEngineError, quote } from '../errors'

/** Finished jobs kept for `jobs` and `job status` (the oldest go first). */
const FINISHED_KEPT = 32

/** What a job body is handed: the cancel signal, progress, and a line saying what it does. */
export interface LiveJobContext extends Required<OperationOptions> {
  /** Say what the job is doing now ("copying", "switching the export"). */
  describe(detail: string): void
}

interface Entry {
  record: LiveJob
  controller: AbortController
  finished: Promise<unknown>
}

/**
 * The live jobs of one export (what its control socket's `jobs` lists): each has an id
 * (`<kind>-<n>`), a state, progress in bytes and, once finished, its result or error. A job
 * is cancelled through its AbortSignal; the body decides where it can stop (between windows,
 * as the job mechanism's walk does). Used by the control socket and, in the app, by main/ipc.
 */
export class LiveJobTable {
  private readonly entries = new Map<string, Entry>()
  private next = 1

  /**
   * Start `body` as a job of `kind`. Returns its id at once and the promise of its result
   * (which rejects as the body does; the table records the error either way).
   */
  start<T>(
    kind: string,
    body: (context: LiveJobContext) => Promise<T>,
  ): { id: string; result: Promise<T> } {
    const id = `${kind}-${this.next++}`
    const controller = new AbortController()
    const record: LiveJob = {
      id,
      kind,
      state: 'running',
      done: 0,
      total: 0,
      startedAt: new Date().toISOString(),
    }
    const context: LiveJobContext = {
      signal: controller.signal,
      onProgress: (done, total) => {
        record.done = done
        record.total = total
      },
      describe: (detail) => (record.detail = detail),
    }
    const result = Promise.resolve()
      .then(() => body(context))
      .then(
        (value) => {
          this.finish(record, 'done')
          if (value !== undefined) record.result = value
          return value
        },
        (error: unknown) => {
          // A body may stop on the signal through Node's own AbortError (a timer, a stream).
          const cancelled =
            controller.signal.aborted &&
            (isEngineError(error, 'ABORTED') ||
              (error instanceof Error && error.name === 'AbortError'))
          this.finish(record, cancelled ? 'cancelled' : 'failed')
          record.error =
            cancelled && !isEngineError(error)
              ? { code: 'ABORTED', message: `The live ${kind} was cancelled.` }
              : errorOf(error)
          throw error
        },
      )
    this.entries.set(id, { record, controller, finished: result.catch(() => undefined) })
    this.forgetOldest()
    return { id, result }
  }

  /** Every job kept, oldest first (copies). */
  list(): LiveJob[] {
    return [...this.entries.values()].map((entry) => ({ ...entry.record }))
  }

  /** The job `id`, or NOT_FOUND naming it. */
  get(id: string): LiveJob {
    return { ...this.entry(id).record }
  }

  /** The jobs still running of the given kinds (all kinds when none is given). */
  running(...kinds: string[]): LiveJob[] {
    return this.list().filter(
      (job) => job.state === 'running' && (kinds.length === 0 || kinds.includes(job.kind)),
    )
  }

  /** Ask the job `id` to stop; it ends as 'cancelled' once its body has stopped. */
  cancel(id: string): LiveJob {
    const entry = this.entry(id)
    if (entry.record.state === 'running') entry.controller.abort()
    return { ...entry.record }
  }

  /** Cancel every running job and wait for them to end (the export is stopping). */
  async cancelAll(): Promise<void> {
    for (const entry of this.entries.values()) entry.controller.abort()
    await Promise.all([...this.entries.values()].map((entry) => entry.finished))
  }

  private entry(id: string): Entry {
    const entry = this.entries.get(id)
    if (!entry) {
      throw new EngineError('NOT_FOUND', `There is no live job ${quote(id)}.`, {
        field: 'job',
        value: id,
      })
    }
    return entry
  }

  private finish(record: LiveJob, state: LiveJob['state']): void {
    record.state = state
    record.finishedAt = new Date().toISOString()
    // What it was doing is over; the result or the error says how it ended.
    delete record.detail
    this.forgetOldest()
  }

  private forgetOldest(): void {
    const finished = [...this.entries.values()].filter((entry) => entry.record.state !== 'running')
    for (const entry of finished.slice(0, Math.max(0, finished.length - FINISHED_KEPT)))
      this.entries.delete(entry.record.id)
  }
}

/** An error as the control socket carries it (a bug is INTERNAL with its message). */
export function errorOf(error: unknown): NonNullable<LiveJob['error']> {
  if (isEngineError(error)) {
    return {
      code: error.code,
      message: error.message,
      ...(error.path !== undefined ? { path: error.path } : {}),
      ...(error.field !== undefined ? { field: error.field } : {}),
    }
  }
  return { code: 'INTERNAL', message: error instanceof Error ? error.message : String(error) }
}
