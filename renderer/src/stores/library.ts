import { defineStore } from 'pinia'
import { markRaw, ref, shallowRef } from 'vue'
import type { ImageSummary, ResponseOf } from '../../../shared/ipc/contract'
import { errorMessage, useClient } from '../api'
import { applyListing } from '../lib/library-listing'

/** The library of known images, reloaded whenever main says it changed. */
export const useLibraryStore = defineStore('library', () => {
  const client = useClient()
  // Rows are replaced whole, never changed in place: a shallow ref of raw rows spares Vue
  // making 1,000 summaries deeply reactive, and a Refresh that changed nothing keeps the array.
  const images = shallowRef<ImageSummary[]>([])
  /** The listing `images` holds, named by main: a Refresh asks for what changed since. */
  let version: string | null = null
  const warning = ref<string | null>(null)
  /** Why the last load failed (the list shown is then the one before), or null. */
  const error = ref<string | null>(null)
  const loading = ref(false)
  const loaded = ref(false)
  /** The list under way, and the one asked while it ran (each diff applies to the one before). */
  let running: Promise<void> | null = null
  let queued: Promise<void> | null = null

  /** List the library again; asked while a list runs, it lists once more after that one. */
  function load(): Promise<void> {
    if (!running) {
      running = listOnce().finally(() => (running = null))
      return running
    }
    queued ??= running
      .catch(() => undefined)
      .then(() => {
        queued = null
        return load()
      })
    return queued
  }

  async function listOnce(): Promise<void> {
    loading.value = true
    try {
      const listing = await client.call(
        'library:list-images',
        version === null ? {} : { since: version },
      )
      for (const image of listing.images) markRaw(image)
      images.value = applyListing(images.value, listing)
      version = listing.version
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

  /** Add images: those that open are added, the others come back in `failed` with why. */
  async function add(paths: string[]): Promise<ResponseOf<'library:add-images'>> {
    return client.call('library:add-images', { paths })
  }

  async function remove(path: string): Promise<void> {
    await client.call('library:remove-images', { paths: [path] })
  }

  async function approveName(image: string, stored: string): Promise<void> {
    await client.call('library:approve-name', { image, stored })
  }

  /** Record the base's current fingerprint for `overlay` (the user vouches for the base). */
  async function recordFingerprint(overlay: string): Promise<void> {
    await client.call('library:record-fingerprint', { path: overlay })
  }

  /** Point `overlay` at its moved base `base`, after main checks size and fingerprint. */
  async function locateBase(
    overlay: string,
    base: string,
    force = false,
  ): Promise<ResponseOf<'library:locate-base'>> {
    return client.call('library:locate-base', { overlay, base, force })
  }

  /** What deleting `path` would remove and who depends on it (dryRun), or delete it. */
  async function deleteFiles(
    path: string,
    dryRun: boolean,
  ): Promise<ResponseOf<'library:delete-files'>> {
    return client.call('library:delete-files', { path, dryRun })
  }

  client.on('library:changed', () => {
    void load().catch(() => undefined)
  })

  return {
    images,
    warning,
    error,
    loading,
    loaded,
    load,
    add,
    remove,
    approveName,
    recordFingerprint,
    locateBase,
    deleteFiles,
  }
})
