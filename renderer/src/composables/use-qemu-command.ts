import { onScopeDispose, ref, shallowRef, watch, type Ref } from 'vue'
import { useClient } from '../api'
import { explainError, type ExplainedError } from '../lib/operation-errors'
import { launchRequest, type LaunchForm, type QemuCommand } from '../lib/qemu-command-view'

/** How long the form must stay still before main is asked for the command line again. */
const SETTLE_MS = 250

/**
 * The QEMU command line for an image and the launch form, as main builds it (`qemu:get-command`),
 * or for a saved machine when `machine` names one (`machines:get-command`), asked again a
 * moment after the form stops changing. Only the answer to the latest question is kept. A form
 * that cannot become a request (an unclosed quote) is said in `formError`. `refresh` asks
 * again at once (after the machine was edited).
 */
export function useQemuCommand(
  image: Readonly<Ref<string | null>>,
  form: Readonly<Ref<LaunchForm>>,
  acceptBase: Readonly<Ref<boolean>>,
  machine: Readonly<Ref<string | null>> = ref(null),
) {
  const client = useClient()
  const command = shallowRef<QemuCommand | null>(null)
  const error = shallowRef<ExplainedError | null>(null)
  const formError = ref<string | null>(null)
  const loading = ref(false)
  let sequence = 0

  /** Ask main for the command line of the saved machine `name`, or of the image and form. */
  function ask(name: string | null, path: string | null): Promise<QemuCommand> | null {
    if (name !== null)
      return client.call('machines:get-command', { name, acceptBase: acceptBase.value })
    if (!path) return null
    const built = launchRequest(path, form.value)
    if ('error' in built) {
      formError.value = built.error
      return null
    }
    return client.call('qemu:get-command', { ...built.request, acceptBase: acceptBase.value })
  }

  async function refresh(): Promise<void> {
    formError.value = null
    const mine = ++sequence
    const asked = ask(machine.value, image.value)
    if (asked === null) {
      if (formError.value === null) command.value = null
      return
    }
    loading.value = true
    try {
      const next = await asked
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
    [image, form, acceptBase, machine],
    () => {
      clearTimeout(timer)
      timer = setTimeout(() => void refresh(), SETTLE_MS)
    },
    { immediate: true, deep: true },
  )
  onScopeDispose(() => clearTimeout(timer))

  return { command, error, formError, loading, refresh }
}
