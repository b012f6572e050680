// The connection (main/nbd/connection.ts): the handshake timeout, flow control and shutdown,
// which keep one client from holding the server's slots, time or memory.
import { describe, expect, it } from 'vitest'
import { DEFAULT_LIMITS } from '../../../main/nbd/export-types'
import { COMMAND, COMMAND_FLAG } from '../../../main/nbd/protocol'
import { seededRandom } from '../../helpers/numbers'
import { attackSeed, basePattern, eventually, MIB, perTestServer } from '../../helpers/nbd/fixtures'
import { abandonMany } from '../../helpers/nbd/hostile-clients'
import type { NbdTestClient } from '../../helpers/nbd/nbd-test-client'

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

describe('NBD connection slots', () => {
  it('come back from clients that hang up in every phase of the handshake and of transmission', async () => {
    const seed = attackSeed()
    const served = await nbd.setup({ server: { maxConnections: 4 } })
    const counts = await abandonMany(served.socket, 72, 4, seededRandom(seed))
    const freed = await eventually(() => served.server.connectionCount === 0, 10_000)
    console.log(`abandoned connections (seed ${seed}): ${JSON.stringify(counts)}`)
    expect(freed, `${served.server.connectionCount} slots still taken`).toBe(true)
    await nbd.stillWorks()
  })

  it('come back from a client whose handshake replies fill its socket, at the timeout', async () => {
    const served = await nbd.setup({
      server: { maxConnections: 1, limits: { handshakeTimeoutMs: 300 } },
    })
    const stuck = await nbd.client()
    stuck.socket.pause()
    stuck.sendClientFlags(3)
    for (let count = 0; count < 3000; count++) stuck.sendOption(3)
    expect(await eventually(() => served.server.connectionCount === 0, 10_000)).toBe(true)
    expect(served.logs.some((event) => /handshake took longer/.test(event.message))).toBe(true)
    await nbd.stillWorks()
  })

  it('let the server close while clients leave their replies unread', async () => {
    const served = await nbd.setup({ server: { limits: { closeTimeoutMs: 200 } } })
    for (let index = 0; index < 3; index++) {
      const greedy = await nbd.client()
      await greedy.negotiate({ structured: index > 0, meta: index > 0 })
      greedy.socket.pause()
      for (let count = 0; count < 40; count++)
        greedy.sendRequest({ type: COMMAND.READ, offset: 0, length: 4 * MIB })
    }
    await new Promise((resolve) => setTimeout(resolve, 100))
    await served.server.close()
    expect(served.server.connectionCount).toBe(0)
    expect(served.server.bufferedBytes).toBe(0)
  })
})

describe('NBD connection memory', () => {
  it('holds a bounded share per client that never reads, and gives it all back', async () => {
    const served = await nbd.setup({
      server: { maxConnections: 32, limits: { maxServerBytes: 32 * MIB } },
    })
    const before = process.memoryUsage().arrayBuffers
    // Simple replies, single data chunks (DF) and plain structured reads, of 1 and 32 MiB.
    const kinds = [
      { structured: true, flags: 0, length: MIB },
      { structured: true, flags: 0, length: 32 * MIB },
      { structured: true, flags: COMMAND_FLAG.DF, length: 32 * MIB },
      { structured: false, flags: 0, length: 32 * MIB },
    ]
    const greedy: NbdTestClient[] = []
    for (let index = 0; index < 16; index++) {
      const kind = kinds[index % kinds.length]!
      const client = await nbd.client()
      await client.negotiate({ structured: kind.structured, meta: kind.structured })
      client.socket.pause()
      for (let count = 0; count < 20; count++)
        client.sendRequest({
          type: COMMAND.READ,
          offset: 0,
          length: kind.length,
          flags: kind.flags,
        })
      greedy.push(client)
    }
    await new Promise((resolve) => setTimeout(resolve, 500))
    await nbd.stillWorks()
    const held = served.server.bufferedBytes
    const grown = process.memoryUsage().arrayBuffers - before
    console.log(
      `16 clients that never read: ${(held / MIB).toFixed(1)} MiB held, array buffers +${(grown / MIB).toFixed(1)} MiB`,
    )
    // The budget (32 MiB) plus at most a piece or two per client beyond its share.
    expect(held).toBeLessThan(32 * MIB + 16 * 2 * MIB)
    expect(grown).toBeLessThan(160 * MIB)
    for (const client of greedy) client.close()
    expect(await eventually(() => served.server.connectionCount === 0, 10_000)).toBe(true)
    expect(served.server.bufferedBytes).toBe(0)
    expect(served.server.pool.idleBytes).toBe(0)
    // A well-behaved client of big reads still gets every byte right.
    const good = await nbd.client()
    await good.negotiate()
    const read = await good.read(0, 3 * MIB)
    expect(read.data.equals(basePattern(0, 3 * MIB))).toBe(true)
  })
})

describe('NBD connection defaults', () => {
  it('keep the 30 s handshake timeout (tests set their own)', () => {
    expect(DEFAULT_LIMITS.handshakeTimeoutMs).toBe(30_000)
  })
})
