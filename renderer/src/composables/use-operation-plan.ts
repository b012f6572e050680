import { ref, shallowRef, watch, type Ref, type ShallowRef } from 'vue'
import { useClient, type IpcClient } from '../api'
import { explainError, type ExplainedError } from '../lib/operation-errors'

/** Reads, through the client, what an operation would do to the image at `path`. */
export type PlanReader<T> = (client: IpcClient, path: string) => Promise<T>

/** What an operation screen knows about its image before the operation runs. */
export interface OperationPlan<T> {
  /** The plan of the image on show; null while it loads, when it failed, or without image. */
  readonly plan: Readonly<ShallowRef<T | null>>
  readonly loading: Readonly<Ref<boolean>>
  /** Why the plan could not be read (the screen shows it with "Try again"). */
  readonly error: Readonly<ShallowRef<ExplainedError | null>>
  /**
   * Read the plan again. `quiet` keeps the plan on show (no spinner) until the new one
   * arrives: for a refresh while the user is looking at it.
   */
  reload(options?: { quiet?: boolean }): Promise<void>
}

/**
 * The plan of the image an operation screen acts on: read when the image changes, again on
 * demand; answers that arrive after another image was chosen are dropped, so the plan on show
 * is always the one of the image on show.
 */
export function useOperationPlan<T>(
  image: Readonly<Ref<string | null>>,
  read: PlanReader<T>,
): OperationPlan<T> {
  const client = useClient()
  const plan = shallowRef<T | null>(null)
  const loading = ref(false)
  const error = shallowRef<ExplainedError | null>(null)
  let ticket = 0

  async function load(path: string | null, quiet: boolean): Promise<void> {
    const mine = ++ticket
    error.value = null
    if (!quiet || path === null) plan.value = null
    if (path === null) {
      loading.value = false
      return
    }
    loading.value = !quiet
    try {
      const next = await read(client, path)
      if (mine === ticket) plan.value = next
    } catch (caught) {
      if (mine === ticket) {
        plan.value = null
        error.value = explainError(caught)
      }
    } finally {
      if (mine === ticket) loading.value = false
    }
  }

  watch(image, (path) => void load(path, false), { immediate: true })

  return {
    plan,
    loading,
    error,
    reload: (options = {}) => load(image.value, options.quiet ?? false),
  }
}
