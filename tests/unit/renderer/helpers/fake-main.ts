import type { AddcowBridge } from '../../../../shared/ipc/bridge'
import { CHANNELS, EVENTS, type ChannelKey, type EventName } from '../../../../shared/ipc/channels'
import type { JobInfo } from '../../../../shared/ipc/contract'
import type { IpcError } from '../../../../shared/ipc/result'

// main as the renderer's tests see it: a `window.addcow` bridge whose channels answer from
// handlers the test gives, and whose jobs start, progress and end when the test says so. The
// renderer's real client, stores and composables run over it, schemas and all.

type Handler = (request: unknown) => unknown
type Bridge = Record<string, unknown>

/** Marks the one `window.addcow` every fake main shares. */
const FORWARDS = Symbol('fake main')
/** The fake main installed last: the shared bridge forwards to it. */
let active: Bridge = {}

/**
 * The renderer's client is made once per module graph and keeps the bridge it found; when test
 * files share one (vitest without isolation), each file's fake main must still answer. So
 * `window.addcow` is one bridge that forwards every call to the fake main installed last.
 */
function forwarder(): AddcowBridge {
  const shared: Bridge = { [FORWARDS]: true }
  for (const key of [...(Object.keys(CHANNELS) as ChannelKey[]), 'on'])
    shared[key] = (...args: unknown[]) => (active[key] as (...a: unknown[]) => unknown)(...args)
  return shared as unknown as AddcowBridge
}

/** A job the fake main started, for the test to end. */
export interface FakeJob {
  info: JobInfo
  request: unknown
}

export interface FakeMain {
  /** Every call, in order: the channel's key and its request. */
  readonly calls: { key: ChannelKey; request: unknown }[]
  /** Answer a call channel; a handler that throws an IpcError makes the call fail with it. */
  handle(key: ChannelKey, handler: Handler): void
  /** Let a job channel start jobs (which run until the test ends them). */
  acceptJobs(key: ChannelKey): void
  /** The jobs started so far, oldest first. */
  readonly jobs: FakeJob[]
  /** Report progress of a job: `done` of `total` bytes. */
  progress(job: FakeJob, done: number, total: number): void
  /** End a job with its result. */
  finish(job: FakeJob, result: unknown): void
  /** End a job with an error (code ABORTED: cancelled). */
  fail(job: FakeJob, error: IpcError): void
  /** Send an event to the renderer, as main does (e.g. a VM's state). */
  emit(event: EventName, payload: unknown): void
}

/** Install a fake main as `window.addcow`; call it before anything uses the client. */
export function installFakeMain(): FakeMain {
  const handlers = new Map<ChannelKey, Handler>()
  const listeners = new Map<EventName, Set<(payload: unknown) => void>>()
  const jobKeys = new Set<ChannelKey>()
  const calls: FakeMain['calls'] = []
  const jobs: FakeJob[] = []

  const emit = (event: EventName, payload: unknown): void => {
    for (const listener of listeners.get(event) ?? []) listener(payload)
  }
  const update = (job: FakeJob, change: Partial<JobInfo>): void => {
    job.info = { ...job.info, ...change }
  }

  handlers.set('jobsCancelJob', (request) => {
    const job = jobs.find((known) => known.info.id === (request as { jobId: string }).jobId)
    if (!job) throw { code: 'NOT_FOUND', message: 'No such job.' }
    update(job, { state: 'cancelling' })
    emit(EVENTS.jobProgress, job.info)
    return { job: job.info }
  })

  const bridge = {
    on(event: EventName, listener: (payload: unknown) => void) {
      const set = listeners.get(event) ?? new Set()
      listeners.set(event, set)
      set.add(listener)
      return () => set.delete(listener)
    },
  } as Bridge
  for (const key of Object.keys(CHANNELS) as ChannelKey[]) {
    bridge[key] = async (request: unknown) => {
      calls.push({ key, request })
      if (jobKeys.has(key)) {
        const job: FakeJob = {
          request,
          info: {
            id: `job-${jobs.length + 1}`,
            channel: CHANNELS[key],
            title: `${CHANNELS[key]} ${jobs.length + 1}`,
            state: 'running',
            startedAt: 0,
            finishedAt: null,
            progress: {
              done: 0,
              total: 0,
              unit: 'bytes',
              fraction: 0,
              bytesPerSecond: null,
              secondsLeft: null,
            },
            detail: null,
            error: null,
          },
        }
        jobs.push(job)
        return { ok: true, value: { job: job.info } }
      }
      const handler = handlers.get(key)
      if (!handler) return { ok: false, error: { code: 'INTERNAL', message: `No fake ${key}.` } }
      try {
        return { ok: true, value: await handler(request) }
      } catch (error) {
        return { ok: false, error: error as IpcError }
      }
    }
  }
  active = bridge
  if (!(window.addcow && FORWARDS in window.addcow)) {
    Object.defineProperty(window, 'addcow', { value: forwarder(), configurable: true })
  }

  return {
    calls,
    jobs,
    handle: (key, handler) => void handlers.set(key, handler),
    emit,
    acceptJobs: (key) => void jobKeys.add(key),
    progress(job, done, total) {
      update(job, {
        progress: { ...job.info.progress, done, total, fraction: total ? done / total : 0 },
      })
      emit(EVENTS.jobProgress, job.info)
    },
    finish(job, result) {
      update(job, { state: 'done', finishedAt: 1 })
      emit(EVENTS.jobDone, { job: job.info, result })
    },
    fail(job, error) {
      update(job, { state: error.code === 'ABORTED' ? 'cancelled' : 'failed', error })
      emit(EVENTS.jobFailed, { job: job.info })
    },
  }
}

/** Let every pending promise and Vue update settle. */
export async function settle(): Promise<void> {
  for (let round = 0; round < 5; round++) await new Promise((resolve) => setTimeout(resolve, 0))
}
