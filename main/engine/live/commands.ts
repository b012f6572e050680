import { z } from 'zod'
import {
  liveJobIdArgsSchema,
  liveSnapshotArgsSchema,
  type LiveStatus,
} from '../../../shared/live-control'
import { EngineError } from '../errors'
import { chainOf } from '../open'
import { registerLiveCommand, type LiveTarget } from './registry'
import { liveSnapshot } from './snapshot'

/**
 * The built-in commands of every control socket (README.md lists them with their replies).
 * Modules with more commands (live flatten, live commit) register theirs and are imported
 * below, so that every socket knows them.
 */

const NO_ARGS = z.strictObject({})

registerLiveCommand('status', NO_ARGS, async (_args, target) => liveStatus(target))

registerLiveCommand('jobs', NO_ARGS, async (_args, target) => target.jobs.list())

registerLiveCommand('job-status', liveJobIdArgsSchema, async ({ id }, target) =>
  target.jobs.get(id),
)

registerLiveCommand('job-cancel', liveJobIdArgsSchema, async ({ id }, target) =>
  target.jobs.cancel(id),
)

registerLiveCommand('snapshot', liveSnapshotArgsSchema, async ({ name }, target) => {
  assertNoJobRunning(target, 'snapshot')
  const { result } = target.jobs.start('snapshot', (job) =>
    liveSnapshot(target, {
      ...(name !== undefined ? { name } : {}),
      signal: job.signal,
      describe: job.describe,
    }),
  )
  return result
})

/** What `status` answers: the chain served now, the export's address and its jobs. */
export function liveStatus(target: LiveTarget): LiveStatus {
  const top = target.live.current
  return {
    pid: process.pid,
    top: top.path,
    format: top.format,
    size: top.size,
    readOnly: top.readOnly,
    chain: chainOf(top).map((layer) => layer.path),
    ...(target.uri !== undefined ? { uri: target.uri } : {}),
    swaps: target.live.swapCount,
    copyOnRead: target.copyOnRead ?? false,
    ...(target.live.copyOnReadErrors.count > 0
      ? { copyOnReadErrors: structuredClone(target.live.copyOnReadErrors) }
      : {}),
    jobs: target.jobs.list(),
  }
}

/**
 * BUSY while another live job runs: a job that changes the served chain (snapshot, the end
 * of a flatten or commit) must not pull the top from under one that copies into it.
 */
export function assertNoJobRunning(target: LiveTarget, doing: string): void {
  const running = target.jobs.running()
  if (running.length === 0) return
  throw new EngineError(
    'BUSY',
    `The live job ${running[0]!.id} is running; wait for it or cancel it (addcow job cancel ${running[0]!.id}) before the ${doing}.`,
    { field: 'job', value: running[0]!.id },
  )
}

// More commands register themselves (README.md, "Adding a command").
import './copy-commands'
