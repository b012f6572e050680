import { onScopeDispose, ref, watch, type Ref } from 'vue'
import type { InterruptedCommitView } from '../../../shared/ipc/contract'
import { useClient } from '../api'

/** The interrupted commit of `overlay`, if the library keeps one; reloaded when it changes. */
export function useCommitState(overlay: Readonly<Ref<string | null>>) {
  const client = useClient()
  const commit = ref<InterruptedCommitView | null>(null)
  let asked = 0

  async function reload(): Promise<void> {
    const path = overlay.value
    const ticket = ++asked
    if (!path) {
      commit.value = null
      return
    }
    const answer = await client
      .call('image:get-commit-state', { overlay: path })
      .catch(() => ({ commit: null }))
    if (ticket === asked) commit.value = answer.commit
  }

  watch(overlay, () => void reload(), { immediate: true })
  onScopeDispose(client.on('library:changed', () => void reload()))
  return { commit, reload }
}
