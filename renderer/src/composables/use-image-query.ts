import { computed } from 'vue'
import { useRoute, useRouter } from 'vue-router'

/**
 * The image an operation screen acts on: the `image` query parameter (`/check?image=/abs/path`),
 * so a screen can be opened on an image from anywhere, bookmarked and reloaded.
 */
export function useImageQuery() {
  const route = useRoute()
  const router = useRouter()
  const image = computed<string | null>(() => {
    const value = route.query.image
    const text = Array.isArray(value) ? value[0] : value
    return typeof text === 'string' && text !== '' ? text : null
  })

  /** Switch the screen to another image (null: none), keeping the other query parameters. */
  async function choose(path: string | null): Promise<void> {
    const query = { ...route.query }
    if (path === null) delete query.image
    else query.image = path
    await router.replace({ query })
  }

  return { image, choose }
}
