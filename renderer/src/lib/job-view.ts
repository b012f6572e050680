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

/**
 * What to say of a job cancelled outside the app (`addcow job cancel` of a live job), without
 * the job's title that main's message starts with (the row shows the title already): "Cancelled
 * outside the app (…); what it copied stays." Null when the app cancelled it itself (main's
 * message is then just "TITLE: cancelled.", and the state tag says it all) or it was not
 * cancelled.
 */
export function cancelledElsewhereNote(job: JobInfo): string | null {
  if (job.state !== 'cancelled' || job.error === null) return null
  const prefix = `${job.title}: `
  const message = job.error.message.startsWith(prefix)
    ? job.error.message.slice(prefix.length)
    : job.error.message
  if (message === 'cancelled.') return null
  return message.charAt(0).toUpperCase() + message.slice(1)
}
