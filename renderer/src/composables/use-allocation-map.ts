import { computed, ref, watch, type Ref } from 'vue'
import type { ImageInfo } from '../../../shared/image-types'
import { useClient } from '../api'
import { formatBytes } from './use-format'
import {
  clustersText,
  clustersIn,
  hexOffset,
  isWholeDisk,
  planRequest,
  viewAround,
  zoomIn,
  zoomOut,
  type Allocation,
  type ViewRange,
} from '../lib/allocation'
import { describeError } from '../lib/errors'

/** How much a zoom step narrows or widens the range. */
const ZOOM_FACTOR = 8
/** Unit for images without clusters (raw): requests never go below a 4 KiB page. */
const FALLBACK_UNIT = 4096

/**
 * The allocation map of one image as main sums it: the image's info, the range on show, the
 * sums of that range (and of the whole disk, for the legend), and the moves of the view: zoom
 * in on a cell, zoom out, back to the whole disk. `cells` is how many cells the map has room
 * for; main is asked again when it changes. Answers to superseded questions are dropped.
 */
export function useAllocationMap(image: Readonly<Ref<string | null>>) {
  const client = useClient()
  const info = ref<ImageInfo | null>(null)
  const allocation = ref<Allocation | null>(null)
  const whole = ref<Allocation | null>(null)
  const range = ref<ViewRange | null>(null)
  const cells = ref(0)
  const loading = ref(false)
  const problem = ref<string | null>(null)
  /** How long main took to answer the last request, in milliseconds. */
  const requestMilliseconds = ref<number | null>(null)
  /**
   * When the change on show was asked for (opening the image, a zoom, a jump), until the map
   * draws it: the view turns it into "shown N ms after asking", the wait the user sees.
   */
  let askedAt: number | null = null
  /** The written range the last "next written range" found, or null. */
  const written = ref<{ start: number; end: number } | null>(null)
  /** What the last "next written range" found, in words (for the live region). */
  const writtenText = ref<string | null>(null)
  let ticket = 0

  const clusterSize = computed(() => info.value?.['cluster-size'] ?? null)
  const unit = computed(() => clusterSize.value ?? FALLBACK_UNIT)
  const virtualSize = computed(() => info.value?.['virtual-size'] ?? 0)
  const zoomed = computed(
    () => range.value !== null && !isWholeDisk(range.value, virtualSize.value),
  )

  async function loadInfo(path: string): Promise<void> {
    askedAt = performance.now()
    const mine = ++ticket
    info.value = null
    allocation.value = null
    whole.value = null
    range.value = null
    written.value = null
    writtenText.value = null
    problem.value = null
    loading.value = true
    try {
      const answer = await client.call('image:get-info', { path, backingChain: false })
      if (mine !== ticket) return
      info.value = answer.layers[0] ?? null
      await loadAllocation()
    } catch (error) {
      if (mine === ticket) {
        problem.value = `The allocation of ${path} could not be read. ${describeError(error)}`
        loading.value = false
      }
    }
  }

  async function loadAllocation(): Promise<void> {
    const path = image.value
    if (path === null || info.value === null || cells.value === 0) return
    const mine = ++ticket
    const shown = range.value ?? { offset: 0, length: virtualSize.value }
    const plan = planRequest(shown, cells.value, unit.value)
    loading.value = true
    problem.value = null
    const started = performance.now()
    try {
      const answer = await client.call('image:get-allocation', { path, ...plan })
      if (mine !== ticket) return
      requestMilliseconds.value = performance.now() - started
      allocation.value = answer
      if (isWholeDisk({ offset: answer.offset, length: answer.length }, answer.virtualSize))
        whole.value = answer
    } catch (error) {
      if (mine === ticket)
        problem.value = `The allocation of ${path} could not be read. ${describeError(error)}`
    } finally {
      if (mine === ticket) loading.value = false
    }
  }

  watch(image, (path) => (path === null ? undefined : void loadInfo(path)), { immediate: true })
  watch(cells, () => void loadAllocation())

  /** Zoom in on cell `index` (ignored while the previous zoom loads: it would start from the old range). */
  function zoomTo(index: number): void {
    const current = allocation.value
    if (!current || loading.value) return
    const next = zoomIn(current, index, ZOOM_FACTOR, unit.value, cells.value)
    if (next.offset === current.offset && next.length === current.length) return
    askedAt = performance.now()
    range.value = next
    void loadAllocation()
  }

  function zoomOutOnce(): void {
    const current = allocation.value
    if (!current || !zoomed.value || loading.value) return
    askedAt = performance.now()
    range.value = zoomOut(
      { offset: current.offset, length: current.length },
      ZOOM_FACTOR,
      current.virtualSize,
      unit.value,
    )
    void loadAllocation()
  }

  /**
   * Show the next range the image itself holds (depth 0) after the last one found while it is
   * on show (else from the start of the view), wrapping to the start of the disk past the last:
   * main finds it through the bitmap's summary, however far away it is.
   */
  async function jumpToNextWritten(): Promise<void> {
    const path = image.value
    const current = allocation.value
    if (path === null || !current || loading.value) return
    // Go on after the range found last while it is still on show; from the view's start once
    // the user has moved elsewhere.
    const last = written.value
    const from =
      last && last.end > current.offset && last.start < current.offset + current.length
        ? last.end
        : current.offset
    askedAt = performance.now()
    loading.value = true
    problem.value = null
    const mine = ++ticket
    try {
      let answer = await client.call('image:find-written', { path, offset: from })
      let wrapped = false
      if (!answer.range && from > 0) {
        answer = await client.call('image:find-written', { path, offset: 0 })
        wrapped = true
      }
      if (mine !== ticket) return
      const found = answer.range
      written.value = found
      if (!found) {
        writtenText.value = 'Nothing is written in this image itself.'
        loading.value = false
        return
      }
      const size = found.end - found.start
      const count = clusterSize.value
        ? `${clustersText(clustersIn(size, clusterSize.value))}, `
        : ''
      writtenText.value =
        `${wrapped ? 'Back at the start: w' : 'W'}ritten range at ${formatBytes(found.start)} ` +
        `(${hexOffset(found.start)}): ${count}${formatBytes(size)}.`
      range.value = viewAround(
        found.start,
        { offset: current.offset, length: current.length },
        current.virtualSize,
        unit.value,
        cells.value,
      )
      await loadAllocation()
    } catch (error) {
      if (mine === ticket) {
        problem.value = `The next written range of ${path} could not be found. ${describeError(error)}`
        loading.value = false
      }
    }
  }

  function showWhole(): void {
    askedAt = performance.now()
    range.value = null
    void loadAllocation()
  }

  /** Ask again: the whole disk (for the legend) and, when zoomed, the range on show. */
  async function refresh(): Promise<void> {
    if (zoomed.value) {
      const kept = range.value
      range.value = null
      await loadAllocation()
      range.value = kept
    }
    await loadAllocation()
  }

  /**
   * Milliseconds from the last request of the user (open, zoom, jump) to now, once per
   * request: the map calls it when it has drawn the answer (null for a mere redraw).
   */
  function takeShownMilliseconds(): number | null {
    if (askedAt === null || loading.value || !allocation.value) return null
    const elapsed = performance.now() - askedAt
    askedAt = null
    return elapsed
  }

  return {
    info,
    allocation,
    whole,
    cells,
    loading,
    problem,
    requestMilliseconds,
    clusterSize,
    unit,
    virtualSize,
    zoomed,
    zoomTo,
    zoomOutOnce,
    showWhole,
    refresh,
    written,
    writtenText,
    jumpToNextWritten,
    takeShownMilliseconds,
  }
}
