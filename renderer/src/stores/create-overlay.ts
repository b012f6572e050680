import { defineStore } from 'pinia'
import { computed, reactive, ref } from 'vue'
import type { ImageInfo } from '../../../shared/image-types'
import type { JobResultOf } from '../../../shared/ipc/contract'
import { useClient } from '../api'
import { useOperationJob } from '../composables/use-operation-job'
import { describeError, describeIpcError } from '../lib/errors'
import {
  createCommandLine,
  createRequest,
  DEFAULT_CLUSTER_SIZE,
  proposeImagePath,
  proposeOverlayPath,
  stepProblem,
  STEPS,
  type CreateOverlayDraft,
  type StepName,
} from '../lib/create-overlay'

type CreateResult = JobResultOf<'operations:create-overlay'>

/** A draft with nothing chosen: relative names, the default cluster size. */
function emptyDraft(): CreateOverlayDraft {
  return {
    base: '',
    baseFormat: null,
    baseSize: null,
    overlay: '',
    image: '',
    nameStyle: 'relative',
    sizeText: '',
    clusterSize: DEFAULT_CLUSTER_SIZE,
  }
}

/**
 * The create-overlay wizard's draft and its one job: the base and its chain as main reads
 * them, where the overlay and its image file go, the names' style, the cluster size, and the
 * operations:create-overlay job with its progress, cancel and outcome.
 */
export const useCreateOverlayStore = defineStore('create-overlay', () => {
  const client = useClient()
  const creation = useOperationJob('operations:create-overlay')

  const draft = reactive<CreateOverlayDraft>(emptyDraft())
  /** The base's chain, top first, as image:get-info reads it. */
  const baseChain = ref<ImageInfo[] | null>(null)
  const baseError = ref<string | null>(null)
  const baseLoading = ref(false)
  /** The overlay and image paths follow the base until the user edits them. */
  const overlayEdited = ref(false)
  const imageEdited = ref(false)
  const step = ref(0)
  let baseRequest = 0

  const stepName = computed<StepName>(() => STEPS[step.value] ?? 'base')
  const problem = computed(() => stepProblem(stepName.value, draft, baseError.value))
  const request = computed(() => createRequest(draft))
  const command = computed(() => createCommandLine(request.value))
  const job = creation.job
  const running = creation.busy
  const result = creation.result
  /** Why the overlay was not created, in a sentence (or that the user cancelled). */
  const failure = computed(() => {
    const error = creation.failure.value
    if (error === null) return null
    return error.code === 'ABORTED'
      ? 'Creation was cancelled; nothing was left behind.'
      : `The overlay was not created: ${describeIpcError(error)}`
  })

  function reset(base: string | null): void {
    Object.assign(draft, emptyDraft())
    baseChain.value = null
    baseError.value = null
    overlayEdited.value = false
    imageEdited.value = false
    step.value = 0
    creation.reset()
    if (base) void chooseBase(base)
  }

  let baseRead: Promise<void> = Promise.resolve()

  /** Take `path` as the base: read its chain, and propose the overlay and image paths. */
  function chooseBase(path: string): Promise<void> {
    baseRead = readBase(path)
    return baseRead
  }

  /** Resolves once the base chosen last has been read (or failed to be). */
  function baseSettled(): Promise<void> {
    return baseRead
  }

  async function readBase(path: string): Promise<void> {
    draft.base = path.trim()
    draft.baseFormat = null
    draft.baseSize = null
    baseChain.value = null
    baseError.value = null
    if (!overlayEdited.value) {
      draft.overlay = draft.base ? proposeOverlayPath(draft.base) : ''
      if (!imageEdited.value) draft.image = draft.overlay ? proposeImagePath(draft.overlay) : ''
    }
    if (stepProblem('base', { ...draft, baseFormat: 'pending' }, null) !== null) return
    const ticket = ++baseRequest
    baseLoading.value = true
    try {
      const info = await client.call('image:get-info', { path: draft.base, backingChain: true })
      if (ticket !== baseRequest) return
      const top = info.layers[0]
      baseChain.value = info.layers
      draft.baseFormat = top?.format ?? null
      draft.baseSize = top?.['virtual-size'] ?? null
    } catch (error) {
      if (ticket !== baseRequest) return
      baseError.value = `${draft.base} cannot be used as a base: ${describeError(error)}`
    } finally {
      if (ticket === baseRequest) baseLoading.value = false
    }
  }

  function setOverlay(path: string): void {
    draft.overlay = path
    overlayEdited.value = true
    if (!imageEdited.value) draft.image = path ? proposeImagePath(path) : ''
  }

  function setImage(path: string): void {
    draft.image = path
    imageEdited.value = true
  }

  /** Start operations:create-overlay; resolves with the result, or null when it failed or stopped. */
  function create(): Promise<CreateResult | null> {
    return creation.run(request.value)
  }

  /** Ask main to stop the creation (it removes what it made). */
  function cancel(): Promise<void> {
    return creation.cancel()
  }

  return {
    draft,
    baseChain,
    baseError,
    baseLoading,
    step,
    stepName,
    problem,
    request,
    command,
    job,
    running,
    result,
    failure,
    reset,
    chooseBase,
    baseSettled,
    setOverlay,
    setImage,
    create,
    cancel,
  }
})
