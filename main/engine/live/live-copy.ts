import { setTimeout as sleep } from 'node:timers/promises'
import { LIVE_MIN_RATE } from '../../../shared/live-copy-jobs'
import type { Disk } from '../disk'
import { EngineError, throwIfAborted } from '../errors'
import type { AllocationRun } from '../ops/job'

/**
 * What the live jobs (flatten, commit) share: the pieces a run is copied in, and the pace a
 * `--rate` sets.
 *
 * A live job copies a run of clusters in pieces of at most {@link PIECE_BYTES}, each under the
 * export's range lock: a guest write to those clusters waits for one piece at most, never for a
 * whole window of the walk.
 */

/** Guest bytes copied under one hold of the range lock. */
export const PIECE_BYTES = 1024 * 1024

/** One piece of a run: units [first, stop), bytes [start, end). */
export type Piece = AllocationRun

/**
 * The pieces of `run` (units of `unit` bytes, the last one clamped to `size`): whole units, at
 * most {@link PIECE_BYTES} each, at least one unit.
 */
export function piecesOf(run: AllocationRun, unit: number, size: number): Piece[] {
  const perPiece = Math.max(1, Math.floor(PIECE_BYTES / unit))
  const pieces: Piece[] = []
  for (let first = run.first; first < run.stop; first += perPiece) {
    const stop = Math.min(run.stop, first + perPiece)
    pieces.push({ first, stop, start: first * unit, end: Math.min(stop * unit, size) })
  }
  return pieces
}

/** Pieces of a window gathered under one hold of the range lock: [first, stop) spans them all. */
export interface Span extends Piece {
  /** The units of the pieces themselves (the span also covers the units between them). */
  units: number
}

/**
 * The pieces of `runs` (ascending, as a walk window gives them) gathered into spans of at most
 * {@link PIECE_BYTES} of guest space each (a piece longer than that is a span alone): a window
 * of short runs, cut up by clusters the guest wrote, takes the range lock once per span instead
 * of once per run, and a guest write still waits for one span at most.
 */
export function spansOf(runs: readonly AllocationRun[], unit: number, size: number): Span[] {
  const spans: Span[] = []
  for (const run of runs) {
    for (const piece of piecesOf(run, unit, size)) {
      const last = spans[spans.length - 1]
      const units = piece.stop - piece.first
      if (last && piece.end - last.start <= PIECE_BYTES) {
        last.stop = piece.stop
        last.end = piece.end
        last.units += units
      } else {
        spans.push({ ...piece, units })
      }
    }
  }
  return spans
}

/** The runs of units in [first, stop) that `layer` holds (`allocated`) or reads below. */
export function runsIn(
  layer: Disk & Required<Pick<Disk, 'forEachAllocationRun'>>,
  first: number,
  stop: number,
  allocated: boolean,
): Piece[] {
  const unit = layer.allocationUnit
  const found: Piece[] = []
  layer.forEachAllocationRun(first, stop, (start, end, held) => {
    if (held === allocated)
      found.push({
        first: start,
        stop: end,
        start: start * unit,
        end: Math.min(end * unit, layer.size),
      })
  })
  return found
}

/**
 * Paces a copy at `bytesPerSecond` at most (null: no limit), as QEMU's block jobs take a
 * `speed`: after each piece the job waits until the bytes copied so far fit the rate since it
 * started. The wait ends early on cancel (ABORTED, naming the job).
 */
export class Throttle {
  private readonly started = Date.now()
  private taken = 0

  constructor(
    private readonly bytesPerSecond: number | null,
    private readonly job: string,
    private readonly signal?: AbortSignal,
  ) {
    if (bytesPerSecond !== null && !(bytesPerSecond >= LIVE_MIN_RATE)) {
      throw new EngineError(
        'BAD_ARGUMENT',
        `The rate ${bytesPerSecond} is below the smallest one, ${LIVE_MIN_RATE} bytes per second.`,
        { field: 'rate', value: bytesPerSecond },
      )
    }
  }

  /** Count `bytes` as copied, and wait as long as the rate says. */
  async take(bytes: number): Promise<void> {
    if (this.bytesPerSecond === null) return
    this.taken += bytes
    const wait = this.started + (this.taken / this.bytesPerSecond) * 1000 - Date.now()
    if (wait <= 0) return
    try {
      await sleep(wait, undefined, this.signal ? { signal: this.signal } : {})
    } catch {
      throwIfAborted(this.signal, this.job)
    }
  }

  /** Guest bytes per walk window: about one second's worth at the rate, so progress moves. */
  windowBytes(unit: number, fallback: number): number {
    if (this.bytesPerSecond === null) return fallback
    return Math.min(fallback, Math.max(unit, Math.floor(this.bytesPerSecond / unit) * unit))
  }
}

/**
 * Throw BUSY when the export no longer serves `top` (a live snapshot put a new top in its place
 * while the job ran): the job's copies belong to the top it started on.
 */
export function assertStillServed(current: Disk, top: Disk, job: string): void {
  if (current === top) return
  throw new EngineError(
    'BUSY',
    `The export now serves ${current.path} instead of ${top.path} (a live snapshot was taken); the ${job} stopped; what it copied stays. Start it again on the new top.`,
    { path: top.path, field: 'served top', value: current.path },
  )
}
