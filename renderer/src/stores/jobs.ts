import { defineStore } from 'pinia'
import { computed, ref } from 'vue'
import type { JobChannel, JobInfo, JobResultOf, RequestOf } from '../../../shared/ipc/contract'
import { IpcRequestError, useClient } from '../api'

interface Waiter {
  resolve(result: unknown): void
  reject(error: Error): void
}

type Outcome = { ok: true; result: unknown } | { ok: false; error: Error }

/**
 * Jobs as main reports them: started, progress, done or failed. Jobs belong to main, so the
 * list is loaded on start (a reloaded window finds the jobs it started) and kept current by
 * events. `run` starts a job and resolves with its checked result.
 */
export const useJobsStore = defineStore('jobs', () => {
  const client = useClient()
  const jobs = ref<JobInfo[]>([])
  /** Who waits for each job's end: the window that started it, and pages that picked it up. */
  const waiters = new Map<string, Waiter[]>()
  /** Outcomes that arrived before the reply that started the job. */
  const early = new Map<string, Outcome>()

  const running = computed(() =>
    jobs.value.filter((job) => job.state === 'running' || job.state === 'cancelling'),
  )

  function upsert(job: JobInfo): void {
    const index = jobs.value.findIndex((known) => known.id === job.id)
    if (index === -1) jobs.value.push(job)
    else jobs.value[index] = job
  }

  function settle(id: string, outcome: Outcome): void {
    const waiting = waiters.get(id)
    if (!waiting) {
      early.set(id, outcome)
      return
    }
    waiters.delete(id)
    for (const waiter of waiting) {
      if (outcome.ok) waiter.resolve(outcome.result)
      else waiter.reject(outcome.error)
    }
  }

  client.on('jobs:started', upsert)
  client.on('jobs:progress', upsert)
  client.on('jobs:done', ({ job, result }) => {
    upsert(job)
    settle(job.id, { ok: true, result })
  })
  client.on('jobs:failed', ({ job }) => {
    upsert(job)
    const error = job.error ?? { code: 'INTERNAL' as const, message: `${job.title} failed.` }
    settle(job.id, { ok: false, error: new IpcRequestError(error, job.channel) })
  })

  async function load(): Promise<void> {
    jobs.value = (await client.call('jobs:list-jobs', {})).jobs
  }

  /**
   * Start a job: resolves with the job as soon as it runs (its id, for progress and cancel),
   * and `result`, which settles with its checked result or rejects with its error.
   */
  async function start<C extends JobChannel>(
    channel: C,
    request: RequestOf<C>,
  ): Promise<{ job: JobInfo; result: Promise<JobResultOf<C>> }> {
    const { job } = await client.startJob(channel, request)
    upsert(job)
    return { job, result: wait(channel, job.id) }
  }

  /**
   * The checked result of the job `id` of `channel` once it ends (rejects with its error): for
   * the window that started it, and for a page that picks up a job still running (after a
   * reload, or started elsewhere). An end that came before this call is seen only when no one
   * was waiting for it.
   */
  function wait<C extends JobChannel>(channel: C, id: string): Promise<JobResultOf<C>> {
    return new Promise<unknown>((resolve, reject) => {
      const outcome = early.get(id)
      early.delete(id)
      if (outcome) {
        if (outcome.ok) resolve(outcome.result)
        else reject(outcome.error)
      } else {
        waiters.set(id, [...(waiters.get(id) ?? []), { resolve, reject }])
      }
    }).then((value) => client.parseJobResult(channel, value))
  }

  /** Start a job and wait for its result (rejects with the job's error if it fails). */
  async function run<C extends JobChannel>(
    channel: C,
    request: RequestOf<C>,
  ): Promise<JobResultOf<C>> {
    return (await start(channel, request)).result
  }

  async function cancel(id: string): Promise<void> {
    const { job } = await client.call('jobs:cancel-job', { jobId: id })
    upsert(job)
  }

  /** Stop a long-lived job (an NBD export or a VM): it shuts down cleanly and ends as done. */
  async function stop(job: JobInfo): Promise<void> {
    if (job.channel === 'qemu:launch-vm' || job.channel === 'machines:start-machine')
      await client.call('qemu:stop-vm', { jobId: job.id })
    else if (job.channel === 'nbd:serve-image')
      await client.call('nbd:stop-export', { jobId: job.id })
    else await cancel(job.id)
  }

  /** Pull the plug on a VM that does not react to Stop: QMP quit, then kill. */
  async function forceOff(job: JobInfo): Promise<void> {
    await client.call('qemu:stop-vm', { jobId: job.id, force: true })
  }

  async function clearFinished(): Promise<void> {
    await client.call('jobs:clear-finished', {})
    await load()
  }

  return { jobs, running, load, start, wait, run, cancel, stop, forceOff, clearFinished }
})
