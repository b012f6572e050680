import { onScopeDispose, ref, shallowRef, watch, type Ref } from 'vue'
import { useClient } from '../api'
import { explainError, type ExplainedError } from '../lib/operation-errors'
import { launchRequest, type LaunchForm, type QemuCommand } from '../lib/qemu-command-view'

/** How long the form must stay still before main is asked for the command line again. */
const SETTLE_MS = 250

/**
 * The QEMU command line for an image and the launch form, as main builds it (`qemu:get-command`),
 * asked again a moment after the form stops changing. Only the answer to the latest question
 * is kept. A form that cannot become a request (an unclosed quote) is said in `formError`.
 */
export function useQemuCommand(
  image: Readonly<Ref<string | null>>,
  form: Readonly<Ref<LaunchForm>>,
  acceptBase: Readonly<Ref<boolean>>,
) {
  const client = useClient()
  const command = shallowRef<QemuCommand | null>(null)
  const error = shallowRef<ExplainedError | null>(null)
  const formError = ref<string | null>(null)
  const loading = ref(false)
  let sequence = 0

  async function refresh(): Promise<void> {
    const path = image.value
    if (!path) {
      command.value = null
      return
    }
    const built = launchRequest(path, form.value)
    if ('error' in built) {
      formError.value = built.error
      return
    }
    formError.value = null
    const mine = ++sequence
    loading.value = true
    try {
      const next = await client.call('qemu:get-command', {
        ...built.request,
        acceptBase: acceptBase.value,
      })
      if (mine !== sequence) return
      command.value = next
      error.value = null
    } catch (caught) {
      if (mine !== sequence) return
      command.value = null
      error.value = explainError(caught)
    } finally {
      if (mine === sequence) loading.value = false
    }
  }

  let timer: ReturnType<typeof setTimeout> | undefined
  watch(
    [image, form, acceptBase],
    () => {
      clearTimeout(timer)
      timer = setTimeout(() => void refresh(), SETTLE_MS)
    },
    { immediate: true, deep: true },
  )
  onScopeDispose(() => clearTimeout(timer))

  return { command, error, formError, loading }
}
