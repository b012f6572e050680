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
