import type { RouteLocationRaw } from 'vue-router'
import type { JobInfo } from '../../../shared/ipc/contract'
import { formatDuration } from '../composables/use-format'

/** How long a job ran (or has run so far, given the time now). */
export function jobDuration(job: JobInfo, now: number = Date.now()): string {
  const end = job.finishedAt ?? now
  const ms = Math.max(0, end - job.startedAt)
  return ms < 1000 ? 'under 1 s' : formatDuration(ms / 1000)
}

/** Where the image a job acted on is shown (its chain), or null for a job on no one image. */
export function jobImageRoute(job: JobInfo): RouteLocationRaw | null {
  return job.image ? { name: 'chain', query: { image: job.image } } : null
}
