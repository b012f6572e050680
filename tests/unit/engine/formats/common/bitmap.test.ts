import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { BITMAP_CHUNK, ClusterBitmap } from '../../../../../main/engine/formats/common/bitmap'
import { geometry, headerSizeFor } from '../../../../../main/engine/formats/add-cow/header'
import { CLUSTER_SIZES } from '../../../../helpers/images'

/** The bitmap rules of FORMATS.md §1, spelt out the slow way. */
function naiveGeometry(clusterSize: number, size: number) {
  let clusters = 0
  while (clusters * clusterSize < size) clusters++
  let bitmapBytes = 0
  while (bitmapBytes * 8 < clusters) bitmapBytes++
  let bitmapArea = 0
  while (bitmapArea < bitmapBytes) bitmapArea += clusterSize
  return {
    clusterSize,
    clusters,
    bitmapBytes,
    bitmapArea,
    fileLength: Math.max(4096, clusterSize) + bitmapArea,
  }
}

function naiveRuns(bits: boolean[], first: number, end: number): [number, number, boolean][] {
  const runs: [number, number, boolean][] = []
  for (let cluster = first; cluster < end; cluster++) {
    const last = runs[runs.length - 1]
    if (last && last[2] === bits[cluster]) last[1] = cluster + 1
    else runs.push([cluster, cluster + 1, bits[cluster]!])
  }
  return runs
}

describe.each(CLUSTER_SIZES)('bitmap maths at %i-byte clusters', (clusterSize) => {
  const bits = Math.log2(clusterSize)

  it('header size is max(4096, cluster size)', () => {
    expect(headerSizeFor(bits)).toBe(Math.max(4096, clusterSize))
  })

  it.each([0, 1, 2, 7, 8, 9, 63, 64, 65, 1000])('geometry around %i clusters', (count) => {
    for (const size of [count * clusterSize - 1, count * clusterSize, count * clusterSize + 1]) {
      if (size < 0) continue
      expect(geometry(bits, size)).toEqual(naiveGeometry(clusterSize, size))
    }
  })

  it('the bitmap area is a whole number of clusters and holds every bit', () => {
    for (const size of [
      1,
      clusterSize * 8 * clusterSize,
      clusterSize * 8 * clusterSize + 1,
      2 ** 40 + 3,
    ]) {
      const shape = geometry(bits, size)
      expect(shape.bitmapArea % clusterSize).toBe(0)
      expect(shape.bitmapArea * 8).toBeGreaterThanOrEqual(shape.clusters)
      expect(shape.bitmapArea - shape.bitmapBytes).toBeLessThan(clusterSize)
      expect(shape.fileLength).toBe(headerSizeFor(bits) + shape.bitmapArea)
    }
  })

  it('a 2^60-byte virtual size gives exact counts', () => {
    const shape = geometry(bits, 2 ** 60)
    expect(shape.clusters).toBe(2 ** (60 - bits))
    expect(shape.bitmapBytes).toBe(2 ** (57 - bits))
    expect(shape.bitmapArea).toBe(2 ** (57 - bits))
  })

  it('maps a guest offset to byte floor(i / 8), bit i % 8, least significant first', () => {
    const clusters = 64
    const bitmap = new ClusterBitmap(new Uint8Array(8), clusters)
    for (const offset of [0, clusterSize - 1, clusterSize, 9 * clusterSize + 5, 63 * clusterSize]) {
      const cluster = Math.floor(offset / clusterSize)
      bitmap.setRange(cluster, cluster + 1)
      expect((bitmap.bytes[cluster >> 3]! >> (cluster % 8)) & 1).toBe(1)
    }
    expect([...bitmap.bytes]).toEqual([0x03, 0x02, 0, 0, 0, 0, 0, 0x80])
    expect(bitmap.allocatedCount).toBe(4)
  })
})

describe('ClusterBitmap', () => {
  it('clears bits past the last cluster when loaded and counts the rest', () => {
    const bitmap = new ClusterBitmap(Uint8Array.from([0xff, 0xff]), 11)
    expect([...bitmap.bytes]).toEqual([0xff, 0x07])
    expect(bitmap.allocatedCount).toBe(11)
    expect(bitmap.isFull).toBe(true)
    expect(new ClusterBitmap(Uint8Array.from([0xff]), 8).isFull).toBe(true)
    expect(new ClusterBitmap(new Uint8Array(0), 0).isFull).toBe(true)
  })

  it('sets and clears ranges, counting each change once', () => {
    const bitmap = new ClusterBitmap(new Uint8Array(4), 30)
    bitmap.setRange(3, 20)
    bitmap.setRange(10, 25)
    expect(bitmap.allocatedCount).toBe(22)
    bitmap.clearRange(0, 5)
    expect(bitmap.allocatedCount).toBe(20)
    expect(bitmap.get(4)).toBe(false)
    expect(bitmap.get(5)).toBe(true)
    expect(bitmap.get(25)).toBe(false)
    bitmap.setRange(0, 30)
    expect(bitmap.isFull).toBe(true)
  })

  it('walks runs exactly like a bit-by-bit walk', () => {
    fc.assert(
      fc.property(
        fc.array(fc.boolean(), { minLength: 1, maxLength: 300 }),
        fc.integer({ min: 0, max: 299 }),
        fc.integer({ min: 0, max: 300 }),
        fc.boolean(),
        (bits, from, to, dense) => {
          // Dense inputs have long runs of whole 0x00 / 0xff bytes, which the walk skips.
          const values = dense ? bits.map((_, i) => bits[Math.floor(i / 24)] ?? false) : bits
          const clusters = values.length
          const bytes = new Uint8Array(Math.ceil(clusters / 8))
          values.forEach((set, i) => {
            if (set) bytes[i >> 3] = bytes[i >> 3]! | (1 << (i & 7))
          })
          const bitmap = new ClusterBitmap(bytes, clusters)
          const first = Math.min(from, clusters)
          const end = Math.min(Math.max(first, to), clusters)
          const runs: [number, number, boolean][] = []
          bitmap.forEachRun(first, end, (start, stop, allocated) =>
            runs.push([start, stop, allocated]),
          )
          expect(runs).toEqual(naiveRuns(values, first, end))
        },
      ),
    )
  })

  it('tracks dirty chunks and hands out copies', () => {
    const clusters = BITMAP_CHUNK * 8 * 3 + 5
    const bitmap = new ClusterBitmap(new Uint8Array(Math.ceil(clusters / 8)), clusters)
    expect(bitmap.hasDirty).toBe(false)
    bitmap.setRange(BITMAP_CHUNK * 8 * 2 + 1, BITMAP_CHUNK * 8 * 2 + 2)
    bitmap.setRange(0, 1)
    bitmap.setRange(0, 1) // no change: nothing more to write
    const chunks = bitmap.takeDirty()
    expect(chunks.map((chunk) => [chunk.offset, chunk.data.length])).toEqual([
      [0, BITMAP_CHUNK],
      [BITMAP_CHUNK * 2, BITMAP_CHUNK],
    ])
    expect(chunks[0]!.data[0]).toBe(1)
    expect(chunks[1]!.data[0]).toBe(2)
    expect(bitmap.hasDirty).toBe(false)
    // The copy does not change when bits change later; the later change is dirty again.
    bitmap.setRange(1, 2)
    expect(chunks[0]!.data[0]).toBe(1)
    expect(bitmap.takeDirty().map((chunk) => chunk.offset)).toEqual([0])
    // The last chunk is short: only the bitmap bytes that exist.
    bitmap.setRange(clusters - 1, clusters)
    const [tail] = bitmap.takeDirty()
    expect(tail!.offset).toBe(BITMAP_CHUNK * 3)
    expect(tail!.data.length).toBe(1)
    bitmap.markDirty([0, BITMAP_CHUNK * 3])
    expect(bitmap.takeDirty().map((chunk) => chunk.offset)).toEqual([0, BITMAP_CHUNK * 3])
    bitmap.clearRange(0, 1)
    expect(bitmap.takeDirty().map((chunk) => chunk.offset)).toEqual([0])
  })
})

describe('the allocation summary (counts per block of 2^9, 2^15 and 2^21 clusters)', () => {
  /** A bitmap of `clusters` bits with `set` ones, and the same bits as booleans. */
  function bitmapOf(clusters: number, set: Iterable<number>): [ClusterBitmap, Set<number>] {
    const bitmap = new ClusterBitmap(new Uint8Array(Math.ceil(clusters / 8)), clusters)
    const model = new Set<number>()
    for (const cluster of set) {
      bitmap.setRange(cluster, cluster + 1)
      model.add(cluster)
    }
    return [bitmap, model]
  }

  function naiveCount(model: Set<number>, first: number, end: number): number {
    let count = 0
    for (const cluster of model) if (cluster >= first && cluster < end) count++
    return count
  }

  function naiveNext(model: Set<number>, first: number, end: number, value: boolean): number {
    if (value) {
      const inside = [...model].filter((cluster) => cluster >= first && cluster < end)
      return inside.length > 0 ? Math.min(...inside) : -1
    }
    for (let cluster = first; cluster < end; cluster++) if (!model.has(cluster)) return cluster
    return -1
  }

  it('counts and finds like a walk over the bits, across every level, after sets and clears', () => {
    // 2^22 + 77 clusters: two whole top-level blocks and a ragged tail; bits placed near the
    // block edges of every level, where off-by-one mistakes would show.
    const clusters = 2 ** 22 + 77
    const edges = [0, 1, 7, 8, 511, 512, 513, 32767, 32768, 2 ** 21 - 1, 2 ** 21, 2 ** 22 + 76]
    fc.assert(
      fc.property(
        fc.uniqueArray(fc.oneof(fc.constantFrom(...edges), fc.nat(clusters - 1)), {
          maxLength: 40,
        }),
        fc.uniqueArray(fc.nat(39), { maxLength: 10 }),
        fc.array(
          fc.tuple(
            fc.oneof(fc.constantFrom(...edges), fc.nat(clusters)),
            fc.oneof(fc.constantFrom(...edges), fc.nat(clusters)),
          ),
          { minLength: 1, maxLength: 8 },
        ),
        (set, cleared, ranges) => {
          const [bitmap, model] = bitmapOf(clusters, set)
          for (const index of cleared) {
            const cluster = set[index]
            if (cluster === undefined) continue
            bitmap.clearRange(cluster, cluster + 1)
            model.delete(cluster)
          }
          expect(bitmap.allocatedCount).toBe(model.size)
          for (const [a, b] of ranges) {
            const first = Math.min(a, b)
            const end = Math.max(a, b)
            expect(bitmap.countRange(first, end)).toBe(naiveCount(model, first, end))
            expect(bitmap.findNext(first, end, true)).toBe(naiveNext(model, first, end, true))
            expect(bitmap.findNext(first, end, false)).toBe(naiveNext(model, first, end, false))
          }
        },
      ),
      { numRuns: 60 },
    )
  })

  it('finds the next clear bit past whole written blocks', () => {
    const clusters = 2 ** 21 + 1000
    const bitmap = new ClusterBitmap(new Uint8Array(Math.ceil(clusters / 8)), clusters)
    bitmap.setRange(100, 2 ** 21 + 5)
    expect(bitmap.findNext(100, clusters, false)).toBe(2 ** 21 + 5)
    expect(bitmap.findNext(0, clusters, false)).toBe(0)
    expect(bitmap.findNext(100, 2 ** 21 + 5, false)).toBe(-1)
    expect(bitmap.countRange(0, clusters)).toBe(2 ** 21 + 5 - 100)
    expect(bitmap.countRange(99, 101)).toBe(1)
    bitmap.clearRange(2 ** 15, 2 ** 15 + 3)
    expect(bitmap.findNext(100, clusters, false)).toBe(2 ** 15)
    expect(bitmap.countRange(0, clusters)).toBe(2 ** 21 + 5 - 100 - 3)
  })

  it('is built from the bytes a bitmap is loaded with, at any alignment of the bytes', () => {
    const clusters = 70_000
    const bytes = new Uint8Array(Math.ceil(clusters / 8) + 1).subarray(1)
    const model = new Set<number>()
    for (const cluster of [0, 9, 511, 512, 40_000, 69_999]) {
      bytes[cluster >>> 3] = bytes[cluster >>> 3]! | (1 << (cluster & 7))
      model.add(cluster)
    }
    // Unaligned bytes (counted one by one) and an aligned copy (counted a word at a time).
    for (const view of [bytes, Uint8Array.from(bytes)]) {
      const bitmap = new ClusterBitmap(view, clusters)
      expect(bitmap.allocatedCount).toBe(6)
      expect(bitmap.countRange(0, clusters)).toBe(6)
      expect(bitmap.countRange(10, 40_001)).toBe(naiveCount(model, 10, 40_001))
      expect(bitmap.countRange(512, 40_000)).toBe(naiveCount(model, 512, 40_000))
      expect(bitmap.findNext(513, clusters, true)).toBe(40_000)
      expect(bitmap.findNext(40_001, clusters, true)).toBe(69_999)
    }
  })
})
