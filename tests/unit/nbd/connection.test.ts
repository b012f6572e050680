// The connection (main/nbd/connection.ts): the handshake timeout and flow control, which keep
// one client from holding the server's time or memory.
import { describe, expect, it } from 'vitest'
import { COMMAND } from '../../../main/nbd/protocol'
import { MIB, perTestServer } from './fixtures'

const nbd = perTestServer()

describe('NBD connection limits', () => {
  it('disconnects a client stuck in the handshake after the timeout', async () => {
    const served = await nbd.setup({ server: { limits: { handshakeTimeoutMs: 200 } } })
    const idle = await nbd.client()
    await idle.greeting()
    await idle.closed
    expect(served.logs.some((event) => /handshake took longer/.test(event.message))).toBe(true)
    await nbd.stillWorks()
  })

  it('stops reading a client that never reads its replies, without failing others', async () => {
    await nbd.setup()
    const greedy = await nbd.client()
    await greedy.negotiate()
    greedy.socket.pause()
    const before = process.memoryUsage().arrayBuffers
    // 200 reads of 1 MiB = 200 MiB of replies the client never reads; the server must hold
    // back (bounded requests in flight) instead of buffering them all.
    for (let index = 0; index < 200; index++)
      greedy.sendRequest({ type: COMMAND.READ, offset: (index % 4) * MIB, length: MIB })
    await new Promise((resolve) => setTimeout(resolve, 500))
    await nbd.stillWorks()
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(120 * MIB)
    greedy.close()
  })
})
