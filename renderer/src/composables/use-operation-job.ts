import { computed, ref, shallowRef } from 'vue'
import type { JobChannel, JobResultOf, RequestOf } from '../../../shared/ipc/contract'
import { explainError, type ExplainedError } from '../lib/operation-errors'
import { useJobsStore } from '../stores/jobs'

/** Where one operation of a screen stands. */
export type OperationPhase = 'idle' | 'starting' | 'running' | 'done' | 'failed' | 'cancelled'

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

  const job = computed(() => jobs.jobs.find((known) => known.id === jobId.value) ?? null)
  const busy = computed(() => phase.value === 'starting' || phase.value === 'running')
  const cancelling = computed(() => job.value?.state === 'cancelling')

  function reset(): void {
    jobId.value = null
    phase.value = 'idle'
    result.value = null
    error.value = null
  }

  /** Run the job to its end; resolves with its result, or null when it failed or was cancelled. */
  async function run(request: RequestOf<C>): Promise<JobResultOf<C> | null> {
    reset()
    phase.value = 'starting'
    try {
      const started = await jobs.start(channel, request)
      jobId.value = started.job.id
      phase.value = 'running'
      const value = await started.result
      result.value = value
      phase.value = 'done'
      return value
    } catch (caught) {
      const explained = explainError(caught)
      error.value = explained
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
      error.value = explainError(caught)
    }
  }

  return { job, jobId, phase, busy, cancelling, result, error, run, cancel, reset }
}
