import { useNotification } from 'naive-ui'
import { h } from 'vue'
import { RouterLink } from 'vue-router'
import type { JobInfo } from '../../../shared/ipc/contract'
import { useClient } from '../api'
import { describeIpcError } from '../lib/errors'
import { jobDuration, jobImageRoute } from '../lib/job-view'
import { useAppStore } from '../stores/app'

/** A job that ran at least this long is announced when it ends. */
export const LONG_JOB_MS = 10_000

/**
 * Announce the end of long jobs: an in-app notification (with how long it took and a link to
 * its image), and in the desktop app the system's notification too, so a user who went to
 * another window hears of it.
 */
export function useJobNotifications(): void {
  const client = useClient()
  const app = useAppStore()
  const notification = useNotification()

  function announce(job: JobInfo): void {
    if (job.finishedAt === null || job.finishedAt - job.startedAt < LONG_JOB_MS) return
    const outcome =
      job.state === 'done' ? 'finished' : job.state === 'cancelled' ? 'was cancelled' : 'failed'
    const title = `${job.title} ${outcome}`
    const detail = `After ${jobDuration(job)}.${job.error && job.state === 'failed' ? ` ${describeIpcError(job.error)}` : ''}`
    const route = jobImageRoute(job)
    notification.create({
      type: job.state === 'done' ? 'success' : job.state === 'failed' ? 'error' : 'warning',
      title,
      content: detail,
      duration: 10_000,
      keepAliveOnHover: true,
      action: route
        ? () => h(RouterLink, { to: route }, { default: () => 'Show the image' })
        : undefined,
    })
    if (app.info?.shell === 'electron' && typeof Notification !== 'undefined') {
      try {
        new Notification(title, { body: detail })
      } catch {
        // The system refused (no permission, no notification service): the in-app one stays.
      }
    }
  }

  client.on('jobs:done', ({ job }) => announce(job))
  client.on('jobs:failed', ({ job }) => announce(job))
}
