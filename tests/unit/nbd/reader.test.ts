import { PassThrough } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { BufferPool } from '../../../main/nbd/buffer-pool'
import { StreamClosedError, StreamReader } from '../../../main/nbd/reader'

describe('StreamReader', () => {
  it('reads exact sizes across chunk boundaries and pauses above the high-water mark', async () => {
    const stream = new PassThrough()
    const reader = new StreamReader(stream, 8)
    const first = reader.read(5)
    stream.write(Buffer.from('abc'))
    stream.write(Buffer.from('defgh'))
    expect((await first).toString()).toBe('abcde')
    stream.write(Buffer.from('ijklmnopqrstu'))
    await new Promise((resolve) => setImmediate(resolve))
    expect(stream.isPaused()).toBe(true)
    expect(reader.pending).toBe(16)
    expect((await reader.read(16)).toString()).toBe('fghijklmnopqrstu')
    expect(stream.isPaused()).toBe(false)
  })

  it('copies into pooled buffers, skips, and reports a close mid-read', async () => {
    const stream = new PassThrough()
    const reader = new StreamReader(stream, 1024)
    const pool = new BufferPool()
    stream.write(Buffer.alloc(3000, 1))
    stream.write(Buffer.alloc(3000, 2))
    const pooled = await reader.readPooled(5000, pool)
    expect(pooled.data).toHaveLength(5000)
    expect(pooled.data[2999]).toBe(1)
    expect(pooled.data[3000]).toBe(2)
    pooled.release()
    await reader.skip(900)
    expect(reader.pending).toBe(100)
    const pending = reader.read(200)
    stream.end()
    await expect(pending).rejects.toBeInstanceOf(StreamClosedError)
    await expect(reader.read(1)).resolves.toHaveLength(1)
  })
})
