import { useMessage } from 'naive-ui'
import { h } from 'vue'
import { errorMessage } from '../api'
import { useJobsStore } from '../stores/jobs'
import { baseName, formatBytes, formatCount } from './use-format'
import { useAppDialog } from './use-app-dialog'

/**
 * "Reset to base": ask main what the overlay holds (a dry run, which also says BUSY while it is
 * served), name it in a confirmation, then empty the overlay (`operations:reset-overlay`, the
 * engine's reset that `addcow reset` runs). The overlay keeps its names and files.
 */
export function useResetOverlay() {
  const jobs = useJobsStore()
  const dialog = useAppDialog()
  const message = useMessage()

  async function resetToBase(overlay: string): Promise<void> {
    let plan
    try {
      plan = await jobs.run('operations:reset-overlay', { overlay, dryRun: true })
    } catch (error) {
      message.error(errorMessage(error))
      return
    }
    const name = baseName(plan.overlay)
    const lost = plan.wasFlattened
      ? `It is flattened: all ${formatCount(plan.clusters)} of its clusters (${formatBytes(plan.bytes)}) are its own, and all are thrown away.`
      : `${formatCount(plan.clusters)} cluster${plan.clusters === 1 ? '' : 's'} written in it (${formatBytes(plan.bytes)} of guest data) ${plan.clusters === 1 ? 'is' : 'are'} thrown away for good.`
    dialog.warning({
      title: `Reset ${name} to its base?`,
      content: () =>
        h('div', [
          h('p', lost),
          h(
            'p',
            `Afterwards it reads ${plan.base} again, as when it was made. Its names and files stay: ${plan.overlay} and ${plan.image}.`,
          ),
        ]),
      positiveText: 'Reset to base',
      negativeText: 'Cancel',
      onPositiveClick: () =>
        jobs.run('operations:reset-overlay', { overlay }).then(
          (done) =>
            message.success(
              `Reset ${name}: ${formatCount(done.clusters)} cluster${done.clusters === 1 ? '' : 's'} thrown away; it reads ${baseName(done.base)} again.`,
            ),
          (error: unknown) => message.error(errorMessage(error)),
        ),
    })
  }

  return { resetToBase }
}
