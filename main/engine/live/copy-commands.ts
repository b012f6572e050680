import { liveCommitArgsSchema, liveFlattenArgsSchema } from '../../../shared/live-copy-jobs'
import { liveCommit } from './commit'
import { assertNoJobRunning } from './commands'
import { liveFlatten } from './flatten'
import { registerLiveCommand } from './registry'

/**
 * The control socket's live copy jobs: `flatten` (live stream) and `commit` (a layer below the
 * top, or the served top itself). Each refuses while another live job runs (its end changes
 * the served chain), starts a job and answers its id; `job-status` follows it, `job-cancel`
 * stops it with what it copied still valid.
 */

registerLiveCommand('flatten', liveFlattenArgsSchema, async ({ rate }, target) => {
  assertNoJobRunning(target, 'flatten')
  const { id, result } = target.jobs.start('flatten', (job) => {
    job.describe(`copying into ${target.live.current.path} what it reads from its chain`)
    return liveFlatten(target, { ...(rate !== undefined ? { rate } : {}), ...job })
  })
  // The table records how it ended; nobody else awaits it.
  result.catch(() => undefined)
  return { id }
})

registerLiveCommand('commit', liveCommitArgsSchema, async (args, target) => {
  assertNoJobRunning(target, 'commit')
  const { id, result } = target.jobs.start('commit', (job) => {
    job.describe(
      (args.layer ?? 0) === 0
        ? `copying ${target.live.current.path} into its base while the guest writes`
        : `copying layer ${args.layer} of the chain into the layer below it`,
    )
    return liveCommit(target, { ...args, ...job })
  })
  result.catch(() => undefined)
  return { id }
})
