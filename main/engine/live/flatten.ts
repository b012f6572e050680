import { assertAbilities, type Disk, type OperationOptions } from '../disk'
import { EngineError, throwIfAborted } from '../errors'
import { openImage } from '../open'
import { walkAllocation, WINDOW_BYTES } from '../ops/job'
import { BelowCopier, STREAM_NEEDS } from '../ops/stream'
import { assertStillServed, runsIn, spansOf, Throttle, type Span } from './live-copy'
import { runLimited } from '../extents'
import type { LiveTarget } from './registry'

/**
 * Data copied between two flushes of the served top: each flush makes the clusters copied so
 * far durable, which is how far a restart after a crash of the serving process resumes from.
 * The flushes run in the background while the copy goes on (one at a time), so the data
 * reaches the disk during the copy rather than all in the final sync.
 */
const FLUSH_BYTES = 64 * 1024 * 1024

/** Copies of the unallocated runs of one span at once (each is one copy_file_range). */
const SPAN_COPIES = 8

/** The served top as the live flatten uses it. */
type Streamed = Disk & Required<Pick<Disk, (typeof STREAM_NEEDS)[number]>>

/** How the live flatten runs. */
export interface LiveFlattenOptions extends OperationOptions {
  /** Bytes per second at most (null or absent: as fast as it goes). */
  rate?: number | null
}

/** What a live flatten did. */
export interface LiveFlattenResult {
  overlay: string
  /** Clusters this run copied from the chain, bytes copied, bytes that were zeros. */
  clusters: number
  copiedBytes: number
  zeroBytes: number
  /** Clusters the walk found unallocated but a guest write had filled by the time of the copy. */
  guestWon: number
  /** ALL_ALLOCATED was already set: nothing to do. */
  alreadyDone: boolean
}

/**
 * The live flatten (issue 17 item 2): `stream` on the top an export serves, while the guest
 * goes on writing. Window by window ({@link walkAllocation} on the served top), and span by
 * span ({@link spansOf}: the window's runs gathered up to 1 MiB of guest space) under the
 * export's range lock, it re-reads the allocation and copies from the chain only the clusters
 * still unallocated, so a guest write that landed first always wins, and one that comes later
 * waits for one span at most. Every {@link FLUSH_BYTES} a flush of the top starts in the
 * background: after a crash of the serving process the bitmap says what was copied, and the
 * same job on the restarted export copies only the rest. A cancel flushes and stops; what was
 * copied stays.
 *
 * At the end, still while the guest writes, ALL_ALLOCATED is set (after the full bitmap, both
 * durable), the top is opened again (with the flag, the driver no longer opens the base) and
 * the base's locks go; then, under quiesce, the export swaps to the new handle, and the old one
 * is closed with its chain, so from then on the export reads only the image file. The pause
 * is the swap alone.
 */
export async function liveFlatten(
  target: LiveTarget,
  options: LiveFlattenOptions = {},
): Promise<LiveFlattenResult> {
  const { live } = target
  const top = live.current
  assertAbilities(top, STREAM_NEEDS, 'the live flatten')
  const overlay = top as Streamed
  const result: LiveFlattenResult = {
    overlay: top.path,
    clusters: 0,
    copiedBytes: 0,
    zeroBytes: 0,
    guestWon: 0,
    alreadyDone: false,
  }
  // A bitmap filled by guest writes sets the flag with the base still open: swap all the same.
  if (overlay.isAllAllocated() && !top.backing) return { ...result, alreadyDone: true }
  if (top.readOnly) {
    throw new EngineError(
      'READ_ONLY',
      `${top.path} is served read-only; the live flatten writes into it (serve it without --read-only).`,
      { path: top.path },
    )
  }
  const throttle = new Throttle(options.rate ?? null, 'live flatten', options.signal)
  const copier = await BelowCopier.open(overlay)
  const flushes = new BackgroundFlushes(() => overlay.flush())
  try {
    const unit = overlay.allocationUnit
    await walkAllocation(
      overlay,
      {
        operation: 'live flatten',
        select: 'unallocated',
        windowBytes: throttle.windowBytes(unit, WINDOW_BYTES),
        flush: { every: FLUSH_BYTES, flush: () => flushes.start() },
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      },
      async (runs) => {
        let copiedHere = 0
        for (const span of spansOf(runs, unit, overlay.size)) {
          if (options.signal?.aborted) {
            await flushes.settle()
            await overlay.flush()
            throwIfAborted(options.signal, 'live flatten')
          }
          copiedHere += await live.withRanges(span.start, span.end - span.start, (current) => {
            assertStillServed(current, top, 'live flatten')
            return copySpan(overlay, copier, span, result)
          })
          await throttle.take(span.units * unit)
        }
        return copiedHere
      },
    )
    await flushes.settle()
  } finally {
    await flushes.settle().catch(() => undefined)
    await copier.close()
  }
  throwIfAborted(options.signal, 'live flatten')
  assertStillServed(live.current, top, 'live flatten')
  // While the guest goes on writing: the copied data and the full bitmap made durable, then
  // ALL_ALLOCATED (guest writes from now on go straight to the image file, and nothing reads
  // the base any more). So, still before the pause, the top can be opened again without its
  // base (the new handle has no bitmap that could fall behind the old one's) and the base's
  // locks can go.
  await overlay.setAllAllocated()
  const flat = await openImage(top.path, {
    format: top.format,
    readOnly: false,
    ...(target.policy ? { policy: target.policy } : {}),
  })
  try {
    await target.locks.retarget(flat)
  } catch (error) {
    await flat.close().catch(() => undefined)
    throw error
  }
  // The pause is the swap alone. No flush in it: the new handle writes the same image file,
  // so a guest flush after the swap syncs what the old handle wrote too; its close below
  // flushes it once more all the same.
  const old = await live
    .quiesce(
      async (current) => {
        assertStillServed(current, top, 'live flatten')
        const old = live.swap(flat)
        live.settle(old)
        return old
      },
      { flush: false },
    )
    .catch(async (error: unknown) => {
      await flat.close().catch(() => undefined)
      throw error
    })
  // Nothing reaches the old handle any more: closing it closes the base.
  await old.close()
  return result
}

/**
 * Under the span's range lock: re-read the allocation and copy, in parallel, only the runs
 * still unallocated (a guest write that landed first is its own), marking each as it lands.
 * Returns the bytes copied.
 */
async function copySpan(
  overlay: Streamed,
  copier: BelowCopier,
  span: Span,
  result: LiveFlattenResult,
): Promise<number> {
  const todo = runsIn(overlay, span.first, span.stop, false)
  let copied = 0
  await runLimited(
    todo.map((part) => async () => {
      const done = await copier.copy(part.start, part.end)
      overlay.markAllocated(part.first, part.stop)
      result.clusters += part.stop - part.first
      result.copiedBytes += done.copied
      result.zeroBytes += done.zero
      copied += done.copied
    }),
    SPAN_COPIES,
  )
  result.guestWon += span.units - todo.reduce((sum, part) => sum + part.stop - part.first, 0)
  return copied
}

/**
 * Flushes of the served top started while the copy goes on, one at a time: {@link start}
 * waits for the previous flush (and throws its failure), then starts the next without
 * waiting for it; {@link settle} waits for the one under way.
 */
class BackgroundFlushes {
  private running: Promise<void> = Promise.resolve()

  constructor(private readonly flush: () => Promise<void>) {}

  async start(): Promise<void> {
    await this.running
    const next = this.flush()
    // Its failure is thrown by the next start or settle, not reported as unhandled.
    next.catch(() => undefined)
    this.running = next
  }

  settle(): Promise<void> {
    return this.running
  }
}
