import { describe, expect, it } from 'vitest'
import { PIECE_BYTES, spansOf } from '../../../../main/engine/live/live-copy'
import type { AllocationRun } from '../../../../main/engine/ops/job'

const UNIT = 64 * 1024
const PER_PIECE = PIECE_BYTES / UNIT

/** A run of units [first, stop) of {@link UNIT} bytes. */
function run(first: number, stop: number): AllocationRun {
  return { first, stop, start: first * UNIT, end: stop * UNIT }
}

describe('spansOf', () => {
  it('gathers the short runs of a window under one lock hold while they fit in one piece', () => {
    const spans = spansOf([run(0, 2), run(3, 4), run(10, 12)], UNIT, 1 << 30)
    expect(spans).toEqual([{ first: 0, stop: 12, start: 0, end: 12 * UNIT, units: 5 }])
  })

  it('starts a new span where the guest space would pass one piece, and cuts long runs', () => {
    const spans = spansOf([run(0, 2), run(PER_PIECE, PER_PIECE * 3 + 1)], UNIT, 1 << 30)
    expect(spans.map((span) => [span.first, span.stop, span.units])).toEqual([
      [0, 2, 2],
      [PER_PIECE, PER_PIECE * 2, PER_PIECE],
      [PER_PIECE * 2, PER_PIECE * 3, PER_PIECE],
      [PER_PIECE * 3, PER_PIECE * 3 + 1, 1],
    ])
    for (const span of spans) expect(span.end - span.start).toBeLessThanOrEqual(PIECE_BYTES)
  })

  it('clamps the last span to the disk size', () => {
    const size = 3 * UNIT - 512
    expect(spansOf([run(1, 3)], UNIT, size)).toEqual([
      { first: 1, stop: 3, start: UNIT, end: size, units: 2 },
    ])
  })
})
