import type { z } from 'zod'
import { EngineError, throwIfAborted } from '../engine/errors'
import { liveStatus } from '../engine/live/commands'
import { runLiveCommand, type LiveTarget } from '../engine/live/registry'
import { chainOf } from '../engine/open'
import { commitBlastRadius, type BlastRadius } from '../engine/ops/blast-radius'
import type { LiveJob, LiveStatus } from '../../shared/live-control'
import { liveJobStartedSchema } from '../../shared/live-copy-jobs'
import { JobCancelledElsewhere, type JobRun } from './jobs'
import type { IpcServices } from './services'
import type { VmSessions } from './vm-sessions'

// The live copy jobs of a running VM's export (issue 17 items 2 and 3) as jobs of the app's
// job mechanism: the export's own `flatten` and `commit` commands (what `addcow job` sends to
// a CLI launch) start a live job in its table; the app job follows it, mirrors its progress
// and detail, and cancelling the app job cancels the live one. So the Jobs view, the Launch
// page and `addcow job` all see the same job.

/** How often the app job looks at the live job it follows. */
const FOLLOW_INTERVAL_MS = 200

/** The live target of a VM job, or NOT_CAPABLE when its VM does not run through the export. */
export function liveTargetOf(vms: VmSessions, jobId: string, doing: string): LiveTarget {
  const vm = vms.get(jobId)
  if (!vm.live)
    throw new EngineError(
      'NOT_CAPABLE',
      `The VM of job ${jobId} does not run through the app's NBD export (${vm.command.via}), so ${doing} cannot run live.`,
      { field: 'jobId', value: jobId },
    )
  return vm.live
}

/** What the export of a VM job serves now (the `status` command). */
export function vmLiveStatus(vms: VmSessions, jobId: string): LiveStatus {
  return liveStatus(liveTargetOf(vms, jobId, 'its status'))
}

/**
 * The blast radius of committing layer `layer` of the served chain into the layer below it,
 * as the live commit itself judges it (offline commit's rule).
 */
export async function vmLiveCommitRadius(
  services: IpcServices,
  vms: VmSessions,
  jobId: string,
  layer: number,
): Promise<BlastRadius> {
  const target = liveTargetOf(vms, jobId, 'a commit')
  const chain = chainOf(target.live.current)
  const overlay = chain[layer]
  const base = chain[layer + 1]
  if (!overlay || !base)
    throw new EngineError(
      'BAD_ARGUMENT',
      `The export serves a chain of ${chain.length} layer(s) (${chain.map((disk) => disk.path).join(' → ')}); layer ${layer} has no layer below it to commit into.`,
      { field: 'layer', value: layer },
    )
  return commitBlastRadius({
    overlay: overlay.path,
    base: base.path,
    library: services.library,
    policy: await services.library.policy(),
  })
}

/**
 * Run the export's live command `command` (`flatten`, `commit`) on a VM job's disk as the app
 * job `job`: progress and detail follow the live job; a cancel of the app job cancels it; the
 * app job ends as the live one does (its result, its error, or ABORTED when cancelled).
 */
export async function runVmLiveJob<T>(
  services: IpcServices,
  vms: VmSessions,
  request: { jobId: string; command: 'flatten' | 'commit'; args: object },
  job: JobRun,
  resultSchema: z.ZodType<T>,
): Promise<T> {
  const target = liveTargetOf(vms, request.jobId, `a ${request.command}`)
  const { id } = liveJobStartedSchema.parse(
    await runLiveCommand(request.command, request.args, target),
  )
  const onAbort = (): void => void target.jobs.cancel(id)
  job.signal.addEventListener('abort', onAbort, { once: true })
  try {
    const ended = await followLiveJob(target, id, job)
    return resultOf(ended, resultSchema, job)
  } finally {
    job.signal.removeEventListener('abort', onAbort)
    // The served chain changed (a flattened top, the base served after an active commit): the
    // library views are told. A new top was followed when it was swapped in (VmSessions).
    services.bus.emit('library:changed', {
      reason: 'modified',
      paths: chainOf(target.live.current).map((layer) => layer.path),
    })
  }
}

/** Mirror the live job `id` into `job` until it ends; its last record. */
async function followLiveJob(target: LiveTarget, id: string, job: JobRun): Promise<LiveJob> {
  for (;;) {
    const record = target.jobs.get(id)
    if (record.total > 0) job.progress(record.done, record.total)
    if (record.detail) job.describe(record.detail)
    if (record.state !== 'running') return record
    await new Promise((resolve) => setTimeout(resolve, FOLLOW_INTERVAL_MS))
  }
}

/**
 * The result of an ended live job, or its error as an EngineError: ABORTED when the app job
 * was cancelled, JobCancelledElsewhere when the live job was (`addcow job cancel`), so the app
 * job ends cancelled either way, never failed.
 */
function resultOf<T>(ended: LiveJob, schema: z.ZodType<T>, job: JobRun): T {
  if (ended.state === 'cancelled') {
    throwIfAborted(job.signal)
    throw new JobCancelledElsewhere(
      `cancelled outside the app (addcow job cancel ${ended.id}); what it copied stays.`,
    )
  }
  if (ended.state === 'done') return schema.parse(ended.result)
  const error = ended.error ?? { code: 'INTERNAL' as const, message: `${ended.id} ${ended.state}` }
  throw new EngineError(error.code, error.message, {
    ...(error.path !== undefined ? { path: error.path } : {}),
    ...(error.field !== undefined ? { field: error.field } : {}),
  })
}
