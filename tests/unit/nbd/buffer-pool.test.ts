import { describe, expect, it } from 'vitest'
import { BufferPool } from '../../../main/nbd/buffer-pool'

describe('BufferPool', () => {
  it('reuses pooled buffers by size class', () => {
    const pool = new BufferPool(1 << 20)
    const buffer = pool.take(5000)
    expect(buffer.length).toBe(8192 + 64)
    // A header plus a power-of-two payload stays in the payload's class.
    expect(pool.take(4096 + 28).length).toBe(4096 + 64)
    pool.give(buffer)
    expect(pool.take(8000)).toBe(buffer)
    const big = pool.take(2 << 20)
    pool.give(big)
    // Bigger than the idle limit: not kept, so a new buffer comes back.
    expect(pool.take(2 << 20) === big).toBe(false)
  })
})
