import { assertAbilities, type Disk, type OperationOptions } from '../disk'
import { EngineError, throwIfAborted } from '../errors'
import { openImage } from '../open'
import { walkAllocation, WINDOW_BYTES } from '../ops/job'
import { BelowCopier, STREAM_NEEDS } from '../ops/stream'
import { assertStillServed, piecesOf, runsIn, Throttle } from './live-copy'
import type { LiveTarget } from './registry'

/**
 * Data copied between two flushes of the served top: each flush makes the clusters copied so
 * far durable, which is how far a restart after a crash of the serving process resumes from.
 */
const FLUSH_BYTES = 64 * 1024 * 1024

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
 * goes on writing. Window by window ({@link walkAllocation} on the served top), and piece by
 * piece under the export's range lock, it re-reads the allocation and copies from the chain only
 * the clusters still unallocated, so a guest write that landed first always wins, and one that
 * comes later waits for one piece at most. Every {@link FLUSH_BYTES} the top is flushed: after
 * a crash of the serving process the bitmap says what was copied, and the same job on the
 * restarted export copies only the rest. A cancel flushes and stops; what was copied stays.
 *
 * At the end, under quiesce: ALL_ALLOCATED is set (after the full bitmap), the export swaps to
 * the top reopened (with the flag, the driver no longer opens the base) and the old handle is
 * closed with its chain, so from then on the export reads only the image file.
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
  try {
    const unit = overlay.allocationUnit
    await walkAllocation(
      overlay,
      {
        operation: 'live flatten',
        select: 'unallocated',
        windowBytes: throttle.windowBytes(unit, WINDOW_BYTES),
        flush: { every: FLUSH_BYTES, flush: () => overlay.flush() },
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      },
      async (runs) => {
        let copiedHere = 0
        for (const run of runs) {
          for (const piece of piecesOf(run, unit, overlay.size)) {
            if (options.signal?.aborted) {
              await overlay.flush()
              throwIfAborted(options.signal, 'live flatten')
            }
            copiedHere += await live.withRanges(
              piece.start,
              piece.end - piece.start,
              async (current) => {
                assertStillServed(current, top, 'live flatten')
                // Re-read under the lock: what a guest wrote meanwhile is its own, not copied.
                const todo = runsIn(overlay, piece.first, piece.stop, false)
                let copied = 0
                for (const part of todo) {
                  const done = await copier.copy(part.start, part.end)
                  overlay.markAllocated(part.first, part.stop)
                  result.clusters += part.stop - part.first
                  result.copiedBytes += done.copied
                  result.zeroBytes += done.zero
                  copied += done.copied
                }
                const missed = piece.stop - piece.first
                result.guestWon +=
                  missed - todo.reduce((sum, part) => sum + part.stop - part.first, 0)
                return copied
              },
            )
            await throttle.take(piece.end - piece.start)
          }
        }
        return copiedHere
      },
    )
  } finally {
    await copier.close()
  }
  throwIfAborted(options.signal, 'live flatten')
  const old = await live.quiesce(async (current) => {
    assertStillServed(current, top, 'live flatten')
    // Flushes the bitmap first: ALL_ALLOCATED is written only after the full bitmap.
    await overlay.setAllAllocated()
    const flat = await openImage(top.path, {
      format: top.format,
      readOnly: false,
      ...(target.policy ? { policy: target.policy } : {}),
    })
    try {
      // The base leaves the chain: its locks go.
      await target.locks.retarget(flat)
    } catch (error) {
      await flat.close().catch(() => undefined)
      throw error
    }
    const old = live.swap(flat)
    // Flushed by the quiesce and closed below: the export's flushes need not cover it.
    live.settle(old)
    return old
  })
  // Nothing reaches the old handle any more: closing it closes the base.
  await old.close()
  return result
}
