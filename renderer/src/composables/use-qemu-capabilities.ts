import { onMounted, shallowRef } from 'vue'
import { useClient } from '../api'
import type { ResponseOf } from '../../../shared/ipc/contract'
import { explainError, type ExplainedError } from '../lib/operation-errors'

/** What this host's QEMU supports (`qemu:get-capabilities`). */
export type QemuCapabilities = ResponseOf<'qemu:get-capabilities'>

/**
 * What the host's QEMU supports, asked once when the component mounts: the launch form offers
 * only what works here and says why the rest is off.
 */
export function useQemuCapabilities() {
  const client = useClient()
  const capabilities = shallowRef<QemuCapabilities | null>(null)
  const error = shallowRef<ExplainedError | null>(null)
  onMounted(async () => {
    try {
      capabilities.value = await client.call('qemu:get-capabilities', {})
    } catch (failure) {
      error.value = explainError(failure)
    }
  })
  return { capabilities, error }
}
