import type { Channel } from '../../shared/ipc/channels'
import type { Disk } from '../engine/disk'
import { EngineError } from '../engine/errors'
import type { Library } from '../engine/library'
import { assertBaseUnchanged, checkBaseDrift } from '../engine/ops/drift'
import type { JobManager } from './jobs'

// What the areas of long-lived sessions (nbd: exports, qemu: VMs) share. A session is a job
// that runs until it is stopped; stopping it is cancelling its job.

/**
 * The drift guard serve, qemu-cmd and launch share (`--accept-base` in the CLI): refuse a base
 * that changed since its fingerprint was recorded, unless `acceptBase`, which records its
 * current fingerprint.
 */
export function driftGuard(
  library: Library,
  acceptBase: boolean,
  doing: string,
): (disk: Disk) => Promise<void> {
  return async (disk) => {
    const report = await checkBaseDrift(disk, library)
    assertBaseUnchanged(report, { force: acceptBase, doing })
    if (
      acceptBase &&
      report.current &&
      (report.status === 'changed' || report.status === 'not-recorded')
    ) {
      await library.recordBaseFingerprint(report.current)
    }
  }
}

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
