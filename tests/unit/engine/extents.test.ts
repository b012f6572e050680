import { describe, expect, it } from 'vitest'
import type { BlockExtent } from '../../../main/engine/disk'
import { checkRange, pushExtent, readInPieces, runLimited } from '../../../main/engine/extents'
import { expectEngineErrorSync } from '../../helpers/errors'

describe('extent helpers', () => {
  it('merge touching extents that are alike, and only those', () => {
    const list: BlockExtent[] = []
    pushExtent(list, { offset: 0, length: 10, depth: 0, present: true, zero: false })
    pushExtent(list, { offset: 10, length: 5, depth: 0, present: true, zero: false })
    pushExtent(list, { offset: 15, length: 0, depth: 1, present: true, zero: false })
    pushExtent(list, { offset: 15, length: 5, depth: 1, present: true, zero: false })
    pushExtent(list, { offset: 20, length: 5, depth: 1, present: false, zero: true })
    pushExtent(list, { offset: 30, length: 5, depth: 1, present: false, zero: true })
    expect(list.map((extent) => [extent.offset, extent.length, extent.depth])).toEqual([
      [0, 15, 0],
      [15, 5, 1],
      [20, 5, 1],
      [30, 5, 1],
    ])
  })

  it('check ranges against the disk size', () => {
    checkRange('/d', 100, 0, 100)
    checkRange('/d', 100, 100, 0)
    for (const [offset, length] of [
      [0, 101],
      [-1, 1],
      [1.5, 1],
      [0, Number.POSITIVE_INFINITY],
      [2 ** 53, 1],
    ]) {
      const error = expectEngineErrorSync(
        () => checkRange('/d', 100, offset!, length!),
        'OUT_OF_RANGE',
      )
      expect(error.path).toBe('/d')
    }
  })

  it('run at most `limit` tasks at once and fail with the first failure', async () => {
    let running = 0
    let peak = 0
    const done: number[] = []
    const tasks = Array.from({ length: 10 }, (_, index) => async () => {
      running++
      peak = Math.max(peak, running)
      await new Promise((resolve) => setImmediate(resolve))
      running--
      done.push(index)
    })
    await runLimited(tasks, 3)
    expect(peak).toBe(3)
    expect(done.sort((a, b) => a - b)).toEqual([...Array(10).keys()])
    const failing = [
      async () => undefined,
      async () => {
        throw new Error('boom')
      },
    ]
    await expect(runLimited(failing, 2)).rejects.toThrow('boom')
  })

  it('read in pieces that cover the target exactly', async () => {
    const target = Buffer.alloc(10)
    const calls: [number, number][] = []
    await readInPieces(target, 100, 4, 2, async (part, at) => {
      calls.push([at, part.length])
      part.fill(at - 100 + 1)
    })
    expect(calls.sort((a, b) => a[0] - b[0])).toEqual([
      [100, 4],
      [104, 4],
      [108, 2],
    ])
    expect([...target]).toEqual([1, 1, 1, 1, 5, 5, 5, 5, 9, 9])
    const small: number[] = []
    await readInPieces(
      Buffer.alloc(4),
      7,
      4,
      2,
      async (part, at) => void small.push(at, part.length),
    )
    expect(small).toEqual([7, 4])
  })
})
