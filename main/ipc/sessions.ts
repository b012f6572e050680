import type { Channel } from '../../shared/ipc/channels'
import { EngineError } from '../engine/errors'
import type { JobManager } from './jobs'

// What the areas of long-lived sessions (nbd: exports, qemu: VMs) share. A session is a job
// that runs until it is stopped; stopping it is cancelling its job. The base drift guard both
// run is the engine's (guardBaseDrift in engine/ops/drift.ts), as the CLI's is.

/** Stop the job `jobId` if it is one of `channel`'s (NOT_FOUND otherwise). */
export function stopSession(
  jobs: JobManager,
  jobId: string,
  channel: Channel,
): { stopping: boolean } {
  const job = jobs.get(jobId)
  if (!job || job.channel !== channel) {
    throw new EngineError('NOT_FOUND', `There is no ${channel} job ${jobId}.`, {
      field: 'jobId',
      value: jobId,
    })
  }
  return { stopping: jobs.cancel(jobId).cancelled }
}

/** Resolves when `signal` aborts (the session's job was cancelled). */
export function untilAborted(signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) resolve()
    else signal.addEventListener('abort', () => resolve(), { once: true })
  })
}
