import fc from 'fast-check'
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AddCowDisk } from '../../../../../main/engine/formats/add-cow/add-cow-disk'
import { openImage } from '../../../../../main/engine/open'
import { createOverlay } from '../../../../../main/engine/ops/create'
import { tempDir } from '../../../../helpers/tools'
import { makeRaw, pattern } from '../../../../helpers/images'

// Model-based test: random sequences of write / writeZeroes / flush / reopen, and batches of
// concurrent writes (Promise.all), on an add-cow overlay over a raw base, checked after every
// step against a plain byte array (the guest view) and a plain boolean array (which clusters
// the image file holds).

interface Piece {
  offset: number
  length: number
  seed: number
}

type Op =
  | ({ kind: 'write' } & Piece)
  | { kind: 'zero'; offset: number; length: number }
  | { kind: 'flush' }
  | { kind: 'reopen' }
  | { kind: 'parallel'; writes: Piece[] }

class Model {
  readonly data: Buffer
  readonly allocated: boolean[]

  constructor(
    base: Buffer,
    readonly size: number,
    readonly clusterSize: number,
  ) {
    this.data = Buffer.alloc(size)
    base.copy(this.data, 0, 0, Math.min(base.length, size))
    this.allocated = new Array<boolean>(Math.ceil(size / clusterSize)).fill(false)
  }

  private clusters(offset: number, length: number): number[] {
    const list: number[] = []
    for (
      let cluster = Math.floor(offset / this.clusterSize);
      cluster * this.clusterSize < offset + length;
      cluster++
    ) {
      list.push(cluster)
    }
    return list
  }

  write(piece: Piece): void {
    pattern(piece.length, piece.seed).copy(this.data, piece.offset)
    for (const cluster of this.clusters(piece.offset, piece.length)) this.allocated[cluster] = true
  }

  /** writeZeroes leaves a whole cluster unallocated when it already reads as zeros below. */
  zero(offset: number, length: number, baseSize: number): void {
    this.data.fill(0, offset, offset + length)
    if (this.allAllocated) return
    for (const cluster of this.clusters(offset, length)) {
      const start = cluster * this.clusterSize
      const end = Math.min(start + this.clusterSize, this.size)
      const whole = offset <= start && offset + length >= end
      if (!(whole && !this.allocated[cluster] && start >= baseSize)) this.allocated[cluster] = true
    }
  }

  get allAllocated(): boolean {
    return this.allocated.every(Boolean)
  }
}

function arbitraryOps(size: number, clusterSize: number): fc.Arbitrary<Op[]> {
  // Offsets near cluster boundaries are where the fill and the bitmap maths can go wrong.
  const offset = fc.oneof(
    fc.integer({ min: 0, max: size - 1 }),
    fc
      .tuple(
        fc.integer({ min: 0, max: Math.ceil(size / clusterSize) }),
        fc.constantFrom(-3, -1, 0, 1, 512),
      )
      .map(([cluster, delta]) => Math.min(size - 1, Math.max(0, cluster * clusterSize + delta))),
  )
  const length = fc.oneof(
    fc.integer({ min: 1, max: 600 }),
    fc.constantFrom(clusterSize, clusterSize - 1, clusterSize + 1, 2 * clusterSize),
    fc.integer({ min: 1, max: 3 * clusterSize }),
  )
  const piece = fc
    .record({ offset, length, seed: fc.integer({ min: 0, max: 1000 }) })
    .map((value) => ({ ...value, length: Math.min(value.length, size - value.offset) }))
  const op: fc.Arbitrary<Op> = fc.oneof(
    { weight: 5, arbitrary: piece.map((value) => ({ kind: 'write' as const, ...value })) },
    {
      weight: 2,
      arbitrary: piece.map(({ offset, length }) => ({ kind: 'zero' as const, offset, length })),
    },
    { weight: 1, arbitrary: fc.constant({ kind: 'flush' as const }) },
    { weight: 1, arbitrary: fc.constant({ kind: 'reopen' as const }) },
    {
      weight: 2,
      arbitrary: fc.array(piece, { minLength: 2, maxLength: 6 }).map((pieces) => {
        // Concurrent writes may share clusters but not bytes: overlapping bytes have no order.
        const writes: Piece[] = []
        for (const candidate of pieces) {
          const clash = writes.some(
            (kept) =>
              candidate.offset < kept.offset + kept.length &&
              kept.offset < candidate.offset + candidate.length,
          )
          if (!clash) writes.push(candidate)
        }
        return { kind: 'parallel' as const, writes }
      }),
    },
  )
  return fc.array(op, { minLength: 1, maxLength: 14 })
}

let root: { path: string; cleanup: () => Promise<void> }
let runNumber = 0

beforeAll(async () => {
  root = await tempDir()
})

afterAll(async () => {
  await root.cleanup()
})

describe.each([
  { clusterSize: 4096, runs: 60 },
  { clusterSize: 65536, runs: 40 },
  { clusterSize: 2 * 1024 * 1024, runs: 8 },
])('an overlay at $clusterSize-byte clusters behaves like its model', ({ clusterSize, runs }) => {
  const size = 4 * clusterSize + Math.floor(clusterSize / 3)

  it('under random writes, zeroes, flushes, reopens and parallel batches', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 5 * clusterSize }),
        arbitraryOps(size, clusterSize),
        async (baseSize, ops) => {
          const folder = join(root.path, `run-${runNumber++}`)
          await mkdir(folder)
          const base = await makeRaw(join(folder, 'base.raw'), baseSize, 1)
          const overlay = join(folder, 'overlay.add-cow')
          await createOverlay({ overlay, backing: 'base.raw', size, clusterSize })
          const model = new Model(base, size, clusterSize)
          let disk = (await openImage(overlay)) as AddCowDisk
          try {
            for (const op of ops) {
              switch (op.kind) {
                case 'write':
                  await disk.write(op.offset, pattern(op.length, op.seed))
                  model.write(op)
                  break
                case 'zero':
                  await disk.writeZeroes(op.offset, op.length)
                  model.zero(op.offset, op.length, baseSize)
                  break
                case 'flush':
                  await disk.flush()
                  break
                case 'reopen':
                  await disk.close()
                  disk = (await openImage(overlay)) as AddCowDisk
                  break
                case 'parallel':
                  await Promise.all(
                    op.writes.map((piece) =>
                      disk.write(piece.offset, pattern(piece.length, piece.seed)),
                    ),
                  )
                  for (const piece of op.writes) model.write(piece)
                  break
              }
              expect(
                (await disk.read(0, size)).equals(model.data),
                `guest view after ${op.kind}`,
              ).toBe(true)
              expect(disk.allAllocated).toBe(model.allAllocated)
              for (let cluster = 0; cluster < model.allocated.length; cluster++) {
                if (!disk.allAllocated)
                  expect(disk.isAllocated(cluster), `cluster ${cluster}`).toBe(
                    model.allocated[cluster],
                  )
              }
            }
            await disk.close()
            disk = (await openImage(overlay, { readOnly: true })) as AddCowDisk
            expect(
              (await disk.read(0, size)).equals(model.data),
              'guest view after the last reopen',
            ).toBe(true)
            expect(disk.allAllocated).toBe(model.allAllocated)
            expect(disk.allocatedClusters).toBe(model.allocated.filter(Boolean).length)
          } finally {
            await disk.close()
          }
        },
      ),
      { numRuns: runs },
    )
  })
})
