import { computed, ref, shallowRef, watch, type Ref } from 'vue'
import type { JobChannel, JobInfo, JobResultOf, RequestOf } from '../../../shared/ipc/contract'
import { IpcRequestError } from '../api'
import { explainError, ipcErrorOf, type ExplainedError } from '../lib/operation-errors'
import type { IpcError } from '../../../shared/ipc/result'
import { useJobsStore } from '../stores/jobs'

/** Where one operation of a screen stands. */
export type OperationPhase = 'idle' | 'starting' | 'running' | 'done' | 'failed' | 'cancelled'

/**
 * What a screen shows of a job it runs, whatever its channel: its progress, its error and its
 * result (of type `R`), and the means to cancel it or forget it.
 */
export interface OperationState<R> {
  readonly job: Readonly<Ref<JobInfo | null>>
  readonly phase: Readonly<Ref<OperationPhase>>
  readonly busy: Readonly<Ref<boolean>>
  readonly result: Readonly<Ref<R | null>>
  readonly error: Readonly<Ref<ExplainedError | null>>
  cancel(): Promise<void>
  reset(): void
}

/**
 * One job channel as a screen runs it: start it, follow its progress (the job as the jobs
 * store keeps it current), cancel it, and keep its checked result or its explained error.
 */
export function useOperationJob<C extends JobChannel>(channel: C) {
  const jobs = useJobsStore()
  const jobId = ref<string | null>(null)
  const phase = ref<OperationPhase>('idle')
  const result = shallowRef<JobResultOf<C> | null>(null)
  const error = shallowRef<ExplainedError | null>(null)
  /** The error as main reported it (code, message, file and value), for one-line messages. */
  const failure = shallowRef<IpcError | null>(null)

  const job = computed(() => jobs.jobs.find((known) => known.id === jobId.value) ?? null)
  const busy = computed(() => phase.value === 'starting' || phase.value === 'running')
  const cancelling = computed(() => job.value?.state === 'cancelling')

  function reset(): void {
    jobId.value = null
    phase.value = 'idle'
    result.value = null
    error.value = null
    failure.value = null
  }

  function fail(caught: unknown): ExplainedError {
    failure.value = ipcErrorOf(caught)
    error.value = explainError(caught)
    return error.value
  }

  /**
   * Run the job to its end; resolves with its result, or null when it failed or was cancelled.
   * `on` is the channel to start it on, when the screen runs one of several (a VM is a launch
   * on an image or a saved machine's start).
   */
  async function run(request: RequestOf<C>, on: C = channel): Promise<JobResultOf<C> | null> {
    reset()
    phase.value = 'starting'
    try {
      const started = await jobs.start(on, request)
      jobId.value = started.job.id
      phase.value = 'running'
      const value = await started.result
      result.value = value
      phase.value = 'done'
      return value
    } catch (caught) {
      const explained = fail(caught)
      phase.value = explained.cancelled ? 'cancelled' : 'failed'
      return null
    }
  }

  /**
   * Follow a job started before this screen was opened (a VM that runs on): its phase and
   * error as the jobs list reports them; its result is not kept (the start's reply had it).
   */
  function follow(id: string): void {
    reset()
    jobId.value = id
    phase.value = 'running'
    /** Take the job's end when it has ended; true once there is nothing more to follow. */
    const settle = (current: JobInfo | null): boolean => {
      if (jobId.value !== id) return true
      if (!current || current.state === 'running' || current.state === 'cancelling') return false
      phase.value = current.state
      if (current.error) fail(new IpcRequestError(current.error, current.channel))
      return true
    }
    if (settle(job.value)) return
    const stop = watch(job, (current) => {
      if (settle(current)) stop()
    })
  }

  /**
   * Take over a job of this channel that runs already (started before a reload, or before the
   * screen was opened): its progress and cancel, and its result or error once it ends, as
   * `run` keeps them. Resolves with the result, or null when it failed or was cancelled.
   */
  async function resume(id: string): Promise<JobResultOf<C> | null> {
    const known = jobs.jobs.find((listed) => listed.id === id)
    if (known && known.state !== 'running' && known.state !== 'cancelling') {
      // It ended before anyone here waited: its end is known, its result is not.
      follow(id)
      return null
    }
    reset()
    jobId.value = id
    phase.value = 'running'
    try {
      const value = await jobs.wait(channel, id)
      if (jobId.value !== id) return value
      result.value = value
      phase.value = 'done'
      return value
    } catch (caught) {
      if (jobId.value !== id) return null
      const explained = fail(caught)
      phase.value = explained.cancelled ? 'cancelled' : 'failed'
      return null
    }
  }

  /** Ask main to stop the job; it ends as cancelled with its files consistent. */
  async function cancel(): Promise<void> {
    if (jobId.value === null) return
    try {
      await jobs.cancel(jobId.value)
    } catch (caught) {
      fail(caught)
    }
  }

  return {
    job,
    jobId,
    phase,
    busy,
    cancelling,
    result,
    error,
    failure,
    run,
    follow,
    resume,
    cancel,
    reset,
  }
}

/** What {@link useOperationJob} returns: one job channel as a screen runs it. */
export type OperationJob<C extends JobChannel = JobChannel> = ReturnType<typeof useOperationJob<C>>
