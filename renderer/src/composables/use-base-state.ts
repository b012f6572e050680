import { onScopeDispose, ref, watch, type Ref } from 'vue'
import type { ResponseOf } from '../../../shared/ipc/contract'
import { useClient } from '../api'

/** The state of the base of `image` as main computes it (sampled content too), kept current. */
export function useBaseState(image: Readonly<Ref<string | null>>) {
  const client = useClient()
  const state = ref<ResponseOf<'image:get-base-state'> | null>(null)
  const error = ref<string | null>(null)
  let asked = 0

  async function load(): Promise<void> {
    const path = image.value
    const ticket = ++asked
    if (!path) {
      state.value = null
      return
    }
    try {
      const answer = await client.call('image:get-base-state', { path })
      if (ticket === asked) {
        state.value = answer
        error.value = null
      }
    } catch (caught) {
      if (ticket === asked) {
        state.value = null
        error.value = caught instanceof Error ? caught.message : String(caught)
      }
    }
  }

  watch(image, () => void load(), { immediate: true })
  onScopeDispose(client.on('library:changed', () => void load()))
  return { state, error, reload: load }
}
