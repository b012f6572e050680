import fc from 'fast-check'
import { mkdir, truncate } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { commitBlastRadius } from '../../../../main/engine/ops/blast-radius'
import { commitOverlay } from '../../../../main/engine/ops/commit'
import { streamOverlay } from '../../../../main/engine/ops/stream'
import {
  guestView,
  libraryIn,
  makeOverlay,
  makeRaw,
  pattern,
  writeGuest,
} from '../../../helpers/images'
import { tempDir } from '../../../helpers/tools'

// The blast radius the engine predicts for a commit equals the set of images whose guest view
// actually changes when the commit runs: random forests of add-cow overlays on raw bases (random
// parents, some flattened, some unreadable, many sharing a base), every image read whole before
// and after the commit and compared byte for byte. Images that cannot be read (an unreadable one,
// or one standing on it) cannot be compared: the engine must name exactly those, as "could not
// be checked", wherever they might read through the base.

const CLUSTER = 4096
const CLUSTERS = 8
const SIZE = CLUSTER * CLUSTERS
/** Only the committing overlay writes cluster 0, so every image reading the base there sees it. */
const SHARED_CLUSTERS = [4, 5, 6, 7]

interface OverlaySpec {
  /** Negative: root -parent-1 (a raw base); else an earlier overlay. */
  parent: number
  flattened: boolean
  broken: boolean
  writes: number[]
}

interface Forest {
  roots: number
  overlays: OverlaySpec[]
  committing: number
}

const forestArbitrary: fc.Arbitrary<Forest> = fc
  .record({
    roots: fc.integer({ min: 1, max: 2 }),
    raw: fc.array(
      fc.record({
        parent: fc.nat(),
        flattened: fc.integer({ min: 0, max: 2 }).map((value) => value === 0),
        broken: fc.integer({ min: 0, max: 4 }).map((value) => value === 0),
        writes: fc.subarray(SHARED_CLUSTERS),
      }),
      { minLength: 2, maxLength: 8 },
    ),
    committing: fc.nat(),
  })
  .map(({ roots, raw, committing }) => {
    const overlays = raw.map((spec, index) => ({
      ...spec,
      parent: (spec.parent % (roots + index)) - roots,
    }))
    const chosen = committing % overlays.length
    // The committing overlay and the chain below it must open: none of them is unreadable.
    for (let at = chosen; at >= 0; at = overlays[at]!.parent) overlays[at]!.broken = false
    return { roots, overlays, committing: chosen }
  })

/** What the model says: images reading through the commit's target, and those not checkable. */
function expectedRadius(forest: Forest): { reads: Set<number>; unknown: Set<number> } {
  const reads = new Set<number>()
  const unknown = new Set<number>()
  const target = forest.overlays[forest.committing]!.parent
  const walk = (from: number, how: 'reads' | 'unknown'): void => {
    for (const [index, spec] of forest.overlays.entries()) {
      if (spec.parent !== from || index === forest.committing) continue
      if (spec.flattened && !spec.broken) continue
      const childHow = how === 'reads' && !spec.broken ? 'reads' : 'unknown'
      ;(childHow === 'reads' ? reads : unknown).add(index)
      walk(index, childHow)
    }
  }
  walk(target, 'reads')
  return { reads, unknown }
}

/** Whether the overlay and every overlay below it can be opened. */
function readable(forest: Forest, index: number): boolean {
  for (let at = index; at >= 0; at = forest.overlays[at]!.parent) {
    if (forest.overlays[at]!.broken) return false
  }
  return true
}

let root: { path: string; cleanup: () => Promise<void> }
let run = 0

beforeAll(async () => {
  root = await tempDir('addcow-radius-')
})
afterAll(async () => {
  await root.cleanup()
})

describe('commit blast radius (property)', () => {
  it('predicts exactly the images whose guest view the commit changes', async () => {
    let sawTransitive = 0
    let sawFlattened = 0
    let sawUnknown = 0
    await fc.assert(
      fc.asyncProperty(forestArbitrary, async (forest) => {
        const folder = join(root.path, `run-${run++}`)
        await mkdir(folder)
        const library = libraryIn(folder)
        const rootPath = (index: number): string => join(folder, `root${index}.raw`)
        const overlayPath = (index: number): string => join(folder, `ov${index}.add-cow`)
        const pathOf = (index: number): string =>
          index < 0 ? rootPath(-index - 1) : overlayPath(index)
        for (let index = 0; index < forest.roots; index++) {
          await makeRaw(rootPath(index), SIZE, 100 + index)
        }
        for (const [index, spec] of forest.overlays.entries()) {
          await makeOverlay(library, {
            overlay: overlayPath(index),
            backing: pathOf(spec.parent).slice(folder.length + 1),
            backingFormat: spec.parent < 0 ? 'raw' : 'add-cow',
            clusterSize: CLUSTER,
          })
          const writes = index === forest.committing ? [0, ...spec.writes] : spec.writes
          await writeGuest(
            overlayPath(index),
            writes.map((cluster) => [cluster * CLUSTER, pattern(CLUSTER, 1000 * run + index)]),
          )
        }
        // Parents before children: each flatten reads a chain that still opens.
        for (const [index, spec] of forest.overlays.entries()) {
          if (spec.flattened)
            await streamOverlay({ overlay: overlayPath(index), library, acceptBase: true })
        }
        // Cut the bitmap off: the header (and its backing name) stays readable.
        for (const [index, spec] of forest.overlays.entries()) {
          if (spec.broken) await truncate(overlayPath(index), CLUSTER)
        }

        const committing = overlayPath(forest.committing)
        const target = pathOf(forest.overlays[forest.committing]!.parent)

        const radius = await commitBlastRadius({ overlay: committing, base: target, library })

        // Every overlay but the target (the commit writes it: its view is meant to change).
        const targetIndex = forest.overlays[forest.committing]!.parent
        const measurable = forest.overlays
          .map((_spec, index) => index)
          .filter((index) => index !== targetIndex && readable(forest, index))
        const before = new Map<number, Buffer>()
        for (const index of measurable) before.set(index, await guestView(overlayPath(index)))
        await commitOverlay({ overlay: committing, library, force: true, acceptBase: true })
        const changed: string[] = []
        for (const index of measurable) {
          const after = await guestView(overlayPath(index))
          if (!after.equals(before.get(index)!)) changed.push(overlayPath(index))
        }

        const model = expectedRadius(forest)
        const predictedReads = radius.dependents.map((node) => node.path).sort()
        const predictedUnknown = radius.unchecked.map((node) => node.path).sort()
        expect(predictedReads).toEqual(changed.sort())
        expect(predictedReads).toEqual([...model.reads].map(pathOf).sort())
        expect(predictedUnknown).toEqual([...model.unknown].map(pathOf).sort())
        // The committing overlay's own view never changes.
        expect(changed).not.toContain(committing)

        if (radius.dependents.some((node) => node.through.length > 2)) sawTransitive++
        if (forest.overlays.some((spec, index) => spec.flattened && index !== forest.committing))
          sawFlattened++
        if (radius.unchecked.length > 0) sawUnknown++
      }),
      {
        numRuns: 40,
        // The issue's own scene, always run: s commits into base.raw; a stands on it, b and c
        // read through a; f is a flattened sibling with g on it; u is unreadable, v stands on u.
        examples: [
          [
            {
              roots: 1,
              committing: 0,
              overlays: [
                { parent: -1, flattened: false, broken: false, writes: [4] }, // s
                { parent: -1, flattened: false, broken: false, writes: [5] }, // a
                { parent: 1, flattened: false, broken: false, writes: [6] }, // b
                { parent: 1, flattened: false, broken: false, writes: [] }, // c
                { parent: -1, flattened: true, broken: false, writes: [] }, // f
                { parent: 4, flattened: false, broken: false, writes: [7] }, // g
                { parent: -1, flattened: false, broken: true, writes: [] }, // u
                { parent: 6, flattened: false, broken: false, writes: [] }, // v
              ],
            },
          ],
        ],
      },
    )
    // The forests exercised what the property is about.
    expect(sawTransitive).toBeGreaterThan(0)
    expect(sawFlattened).toBeGreaterThan(0)
    expect(sawUnknown).toBeGreaterThan(0)
  }, 300_000)
})
