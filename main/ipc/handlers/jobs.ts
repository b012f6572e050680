import type { AreaHandlers } from '../handler-table'
import type { IpcServices } from '../services'

/**
 * `jobs:*`: the jobs every job channel starts (operations, exports, VMs). Jobs belong to main,
 * so a reloaded window finds them again here; cancelling one aborts its signal.
 */
export function jobHandlers(services: IpcServices): AreaHandlers<'jobs'> {
  const { jobs } = services

  return {
    'jobs:list-jobs': async () => ({ jobs: jobs.list() }),

    'jobs:cancel-job': async ({ jobId }) => jobs.cancel(jobId),

    'jobs:clear-finished': async () => ({ removed: jobs.clearFinished() }),
  }
}
