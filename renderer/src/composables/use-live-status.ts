import { onScopeDispose, shallowRef, watch, type Ref } from 'vue'
import type { ResponseOf } from '../../../shared/ipc/contract'
import { useClient } from '../api'
import { explainError, type ExplainedError } from '../lib/operation-errors'

/** What a running VM's export serves now (`qemu:get-live-status`). */
export type LiveStatusView = ResponseOf<'qemu:get-live-status'>

/**
 * How often the status is asked again while the VM runs: copy-on-read failures and live jobs
 * started from the CLI (`addcow job`) show up without a reload.
 */
const POLL_MS = 3000

/**
 * The live status of the VM job `vmJobId` (null: none runs): the served top and chain, its
 * live jobs and copy-on-read failures, asked at once, every few seconds, and by `refresh`
 * (after a snapshot, flatten or commit changed the chain).
 */
export function useLiveStatus(vmJobId: Readonly<Ref<string | null>>) {
  const client = useClient()
  const status = shallowRef<LiveStatusView | null>(null)
  const error = shallowRef<ExplainedError | null>(null)
  let sequence = 0

  async function refresh(): Promise<LiveStatusView | null> {
    const jobId = vmJobId.value
    const mine = ++sequence
    if (jobId === null) {
      status.value = null
      return null
    }
    try {
      const next = await client.call('qemu:get-live-status', { jobId })
      if (mine === sequence) {
        status.value = next
        error.value = null
      }
      return next
    } catch (caught) {
      if (mine === sequence) error.value = explainError(caught)
      return null
    }
  }

  const timer = setInterval(() => void refresh(), POLL_MS)
  onScopeDispose(() => clearInterval(timer))
  watch(vmJobId, () => void refresh(), { immediate: true })

  return { status, error, refresh }
}
