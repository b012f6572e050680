import { ref, watch, type Ref } from 'vue'
import type { ImageInfo } from '../../../shared/image-types'
import { useClient } from '../api'
import { describeError } from '../lib/errors'

/**
 * The chain of the image at `path`, top first, as main reads it (every name as stored and
 * resolved, never following a refused one): read when the path changes and on `reload`.
 * Only the answer about the path on show is kept; an error is one sentence naming the image.
 */
export function useImageChain(path: Readonly<Ref<string | null>>) {
  const client = useClient()
  const chain = ref<ImageInfo[] | null>(null)
  const error = ref<string | null>(null)
  const loading = ref(false)
  let ticket = 0

  async function reload(): Promise<void> {
    const mine = ++ticket
    const current = path.value
    chain.value = null
    error.value = null
    loading.value = current !== null
    if (current === null) return
    try {
      const info = await client.call('image:get-info', { path: current, backingChain: true })
      if (mine === ticket) chain.value = info.layers
    } catch (caught) {
      if (mine === ticket)
        error.value = `The chain of ${current} could not be read. ${describeError(caught)}`
    } finally {
      if (mine === ticket) loading.value = false
    }
  }

  watch(path, () => void reload(), { immediate: true })

  return { chain, error, loading, reload }
}
