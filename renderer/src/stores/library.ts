import { defineStore } from 'pinia'
import { ref } from 'vue'
import type { ImageSummary } from '../../../shared/ipc/contract'
import { errorMessage, useClient } from '../api'

/** The library of known images, reloaded whenever main says it changed. */
export const useLibraryStore = defineStore('library', () => {
  const client = useClient()
  const images = ref<ImageSummary[]>([])
  const warning = ref<string | null>(null)
  /** Why the last load failed (the list shown is then the one before), or null. */
  const error = ref<string | null>(null)
  const loading = ref(false)
  const loaded = ref(false)

  async function load(): Promise<void> {
    loading.value = true
    try {
      const listing = await client.call('library:list-images', {})
      images.value = listing.images
      if (listing.warning) warning.value = listing.warning
      error.value = null
      loaded.value = true
    } catch (failure) {
      error.value = errorMessage(failure)
      throw failure
    } finally {
      loading.value = false
    }
  }

  async function add(paths: string[]): Promise<void> {
    await client.call('library:add-images', { paths })
  }

  async function remove(path: string): Promise<void> {
    await client.call('library:remove-images', { paths: [path] })
  }

  async function approveName(image: string, stored: string): Promise<void> {
    await client.call('library:approve-name', { image, stored })
  }

  client.on('library:changed', () => {
    void load().catch(() => undefined)
  })

  return { images, warning, error, loading, loaded, load, add, remove, approveName }
})
