import { computed, ref, shallowRef, watch, type Ref } from 'vue'
import { useClient } from '../api'
import { formatBytes } from './use-format'
import {
  clusterAmountText,
  hexOffset,
  isWholeDisk,
  MAX_BUCKETS,
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

/** What the map needs of the image besides the sums: its size and cluster size. */
export interface MapShape {
  virtualSize: number
  clusterSize: number | null
}

/**
 * The allocation map of one image as main sums it: the image's shape, the range on show, the
 * sums of that range (and of the whole disk, for the legend), and the moves of the view: zoom
 * in on a cell, zoom out, back to the whole disk. `cells` is how many cells the map has room
 * for; main is asked again when it changes. Answers to superseded questions are dropped.
 *
 * Opening an image asks main once: the whole disk's sums carry its size and cluster size (an
 * info call before them cost a second open of the image and a round trip on every click).
 */
export function useAllocationMap(image: Readonly<Ref<string | null>>) {
  const client = useClient()
  /** The image's size and cluster size, from main's first answer (null until then). */
  const shape = ref<MapShape | null>(null)
  // Answers are replaced whole, never changed in place: shallow refs keep Vue from wrapping
  // each of thousands of buckets in a reactive proxy that every draw would then go through.
  const allocation = shallowRef<Allocation | null>(null)
  const whole = shallowRef<Allocation | null>(null)
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

  const clusterSize = computed(() => shape.value?.clusterSize ?? null)
  const unit = computed(() => clusterSize.value ?? FALLBACK_UNIT)
  const virtualSize = computed(() => shape.value?.virtualSize ?? 0)
  const zoomed = computed(
    () => range.value !== null && !isWholeDisk(range.value, virtualSize.value),
  )

  /** Forget the image on show and ask main for the new one's whole disk. */
  function openImage(): void {
    askedAt = performance.now()
    ticket++
    shape.value = null
    allocation.value = null
    whole.value = null
    range.value = null
    written.value = null
    writtenText.value = null
    problem.value = null
    void loadAllocation()
  }

  /**
   * What to ask for the range on show. Before the first answer the image's size and cluster
   * size are unknown: the whole disk in as many buckets as cells (main's default range).
   */
  function requestFor(): { offset?: number; length?: number; buckets: number } {
    if (shape.value === null)
      return { buckets: Math.max(1, Math.min(MAX_BUCKETS, Math.floor(cells.value))) }
    const shown = range.value ?? { offset: 0, length: virtualSize.value }
    return planRequest(shown, cells.value, unit.value)
  }

  async function loadAllocation(): Promise<void> {
    const path = image.value
    if (path === null || cells.value === 0) return
    const mine = ++ticket
    const plan = requestFor()
    loading.value = true
    problem.value = null
    const started = performance.now()
    try {
      const answer = await client.call('image:get-allocation', { path, ...plan })
      if (mine !== ticket) return
      const first = shape.value === null
      shape.value = { virtualSize: answer.virtualSize, clusterSize: answer.clusterSize }
      // A disk with fewer clusters than cells (asked before its cluster size was known) is
      // asked again with a cell per cluster: a cell is never smaller than a cluster.
      if (first && requestFor().buckets < answer.buckets.length) return await loadAllocation()
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

  watch(image, (path) => (path === null ? undefined : openImage()), { immediate: true })
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
      const count = clusterSize.value ? `${clusterAmountText(size, clusterSize.value)}, ` : ''
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
    shape,
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
