import { defineStore } from 'pinia'
import { computed, reactive, ref } from 'vue'
import type { ImageInfo } from '../../../shared/image-types'
import type { JobInfo, JobResultOf } from '../../../shared/ipc/contract'
import { errorMessage, IpcRequestError, useClient } from '../api'
import { describeError } from '../lib/errors'
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
import { useJobsStore } from './jobs'

type CreateResult = JobResultOf<'operations:create-overlay'>

/**
 * The create-overlay wizard's draft and its one job: the base and its chain as main reads
 * them, where the overlay and its image file go, the names' style, the cluster size, and the
 * operations:create-overlay job with its progress, cancel and outcome.
 */
export const useCreateOverlayStore = defineStore('create-overlay', () => {
  const client = useClient()
  const jobs = useJobsStore()

  const draft = reactive<CreateOverlayDraft>({
    base: '',
    baseFormat: null,
    baseSize: null,
    overlay: '',
    image: '',
    nameStyle: 'relative',
    sizeText: '',
    clusterSize: DEFAULT_CLUSTER_SIZE,
  })
  /** The base's chain, top first, as image:get-info reads it. */
  const baseChain = ref<ImageInfo[] | null>(null)
  const baseError = ref<string | null>(null)
  const baseLoading = ref(false)
  /** The overlay and image paths follow the base until the user edits them. */
  const overlayEdited = ref(false)
  const imageEdited = ref(false)
  const step = ref(0)
  const jobId = ref<string | null>(null)
  const result = ref<CreateResult | null>(null)
  const failure = ref<string | null>(null)
  let baseRequest = 0

  const stepName = computed<StepName>(() => STEPS[step.value] ?? 'base')
  const problem = computed(() => stepProblem(stepName.value, draft, baseError.value))
  const request = computed(() => createRequest(draft))
  const command = computed(() => createCommandLine(request.value))
  const job = computed<JobInfo | null>(() =>
    jobId.value === null ? null : (jobs.jobs.find((known) => known.id === jobId.value) ?? null),
  )
  const running = computed(
    () => job.value !== null && (job.value.state === 'running' || job.value.state === 'cancelling'),
  )

  function reset(base: string | null): void {
    Object.assign(draft, {
      base: '',
      baseFormat: null,
      baseSize: null,
      overlay: '',
      image: '',
      nameStyle: 'relative',
      sizeText: '',
      clusterSize: DEFAULT_CLUSTER_SIZE,
    } satisfies CreateOverlayDraft)
    baseChain.value = null
    baseError.value = null
    overlayEdited.value = false
    imageEdited.value = false
    step.value = 0
    jobId.value = null
    result.value = null
    failure.value = null
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
  async function create(): Promise<CreateResult | null> {
    failure.value = null
    result.value = null
    try {
      const started = await jobs.start('operations:create-overlay', request.value)
      jobId.value = started.job.id
      result.value = await started.result
      return result.value
    } catch (error) {
      failure.value =
        error instanceof IpcRequestError && error.code === 'ABORTED'
          ? 'Creation was cancelled; nothing was left behind.'
          : `The overlay was not created: ${describeError(error)}`
      return null
    }
  }

  async function cancel(): Promise<void> {
    if (jobId.value === null) return
    try {
      await jobs.cancel(jobId.value)
    } catch (error) {
      failure.value = errorMessage(error)
    }
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
