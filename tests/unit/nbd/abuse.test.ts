// A hostile or broken client gets an error or a closed connection; the server, its other
// clients and the data carry on.
import { afterEach, describe, expect, it } from 'vitest'
import { COMMAND, NBD_ERROR, OPTION, REPLY } from '../../../main/nbd/protocol'
import { basePattern, MIB, serveOverlay, type ServedImage } from './fixtures'
import { MAGIC, NbdTestClient } from './nbd-test-client'

let served: ServedImage | null = null
const clients: NbdTestClient[] = []

async function client(): Promise<NbdTestClient> {
  const connection = await NbdTestClient.connect(served!.socket)
  clients.push(connection)
  return connection
}

/** A well-behaved client on the same server still reads and writes correctly. */
async function serverStillWorks(): Promise<void> {
  const good = await client()
  await good.negotiate()
  expect((await good.writeData(3 * MIB, Buffer.alloc(4096, 0x3c))).error).toBe(0)
  expect((await good.read(3 * MIB, 4096)).data).toEqual(Buffer.alloc(4096, 0x3c))
  expect((await good.read(0, 4096)).data).toEqual(basePattern(0, 4096))
  good.close()
}

afterEach(async () => {
  for (const connection of clients.splice(0)) connection.close()
  await served?.cleanup()
  served = null
})

describe('NBD server against hostile clients', () => {
  it('closes on unknown client flags', async () => {
    served = await serveOverlay()
    const bad = await client()
    await bad.greeting()
    bad.sendClientFlags(0x80)
    await bad.closed
    expect(served.logs.some((event) => /unknown client flags/.test(event.message))).toBe(true)
    await serverStillWorks()
  })

  it('closes on an option without IHAVEOPT', async () => {
    served = await serveOverlay()
    const bad = await client()
    await bad.greeting()
    bad.sendClientFlags(1)
    bad.sendOption(OPTION.LIST, Buffer.alloc(0), 0, 0x1234n)
    await bad.closed
    await serverStillWorks()
  })

  it('closes on an option that claims gigabytes of data, without buffering it', async () => {
    served = await serveOverlay()
    const bad = await client()
    await bad.greeting()
    bad.sendClientFlags(1)
    bad.sendOption(OPTION.GO, Buffer.alloc(100), 0xffffffff)
    await bad.closed
    expect(served.logs.some((event) => /4294967295 bytes of data/.test(event.message))).toBe(true)
    await serverStillWorks()
  })

  it('answers malformed option data with NBD_REP_ERR_INVALID and keeps the connection', async () => {
    served = await serveOverlay()
    const bad = await client()
    await bad.greeting()
    bad.sendClientFlags(1)
    const cases: [number, Buffer][] = [
      // name length larger than the data
      [OPTION.GO, Buffer.from([0, 0, 1, 0, 0, 0])],
      // truncated: no information request count
      [OPTION.INFO, Buffer.from([0, 0, 0, 0])],
      // count says 3 requests, 1 sent
      [OPTION.GO, Buffer.from([0, 0, 0, 0, 0, 3, 0, 1])],
      // export name that is not UTF-8
      [OPTION.GO, Buffer.from([0, 0, 0, 2, 0xff, 0xfe, 0, 0])],
      // LIST and STRUCTURED_REPLY take no data
      [OPTION.LIST, Buffer.from('x')],
      [OPTION.STRUCTURED_REPLY, Buffer.from('x')],
    ]
    for (const [option, data] of cases) {
      bad.sendOption(option, data)
      const reply = await bad.readOptionReply()
      expect(reply.type, `option ${option} with ${data.toString('hex')}`).toBe(REPLY.ERR_INVALID)
    }
    bad.sendOption(OPTION.STRUCTURED_REPLY)
    await bad.readOptionReply()
    // meta context query lengths that run past the option data
    bad.sendOption(
      OPTION.SET_META_CONTEXT,
      Buffer.from([0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 50, 0x62]),
    )
    expect((await bad.readOptionReply()).type).toBe(REPLY.ERR_INVALID)
    bad.sendOption(OPTION.LIST_META_CONTEXT, Buffer.from([0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]))
    expect((await bad.readOptionReply()).type).toBe(REPLY.ERR_TOO_BIG)
    bad.sendOption(OPTION.GO, NbdTestClient.infoData('', []))
    expect((await bad.readOptionReplies()).at(-1)!.type).toBe(REPLY.ACK)
    bad.structured = true
    expect((await bad.read(0, 512)).data).toEqual(basePattern(0, 512))
  })

  it('closes on NBD_OPT_EXPORT_NAME for an unknown export, as proto.md requires', async () => {
    served = await serveOverlay({ exportName: 'disk' })
    const bad = await client()
    await bad.greeting()
    bad.sendClientFlags(1)
    bad.sendOption(OPTION.EXPORT_NAME, Buffer.from('nope'))
    await bad.closed
    const good = await client()
    await good.negotiate({ exportName: 'disk' })
  })

  it('closes on a request with a bad magic', async () => {
    served = await serveOverlay()
    const bad = await client()
    await bad.negotiate()
    bad.sendRequest({ type: COMMAND.READ, offset: 0, length: 512, magic: 0xdeadbeef })
    await bad.closed
    expect(served.logs.some((event) => /magic 0xdeadbeef/.test(event.message))).toBe(true)
    await serverStillWorks()
  })

  it('closes on a write that claims more than the maximum block size', async () => {
    served = await serveOverlay()
    const bad = await client()
    await bad.negotiate()
    bad.sendRequest({
      type: COMMAND.WRITE,
      offset: 0,
      length: 0xffffffff,
      data: Buffer.alloc(4096, 0xee),
    })
    await bad.closed
    await serverStillWorks()
    const check = await client()
    await check.negotiate()
    expect((await check.read(0, 4096)).data).toEqual(basePattern(0, 4096))
  })

  it('drops a write whose payload never fully arrives, and applies nothing of it', async () => {
    served = await serveOverlay()
    const bad = await client()
    await bad.negotiate()
    const header = Buffer.alloc(28)
    header.writeUInt32BE(MAGIC.request, 0)
    header.writeUInt16BE(COMMAND.WRITE, 6)
    header.writeBigUInt64BE(1n, 8)
    header.writeBigUInt64BE(BigInt(MIB), 16)
    header.writeUInt32BE(65536, 24)
    bad.write(Buffer.concat([header, Buffer.alloc(1000, 0xee)]))
    await new Promise((resolve) => setTimeout(resolve, 50))
    bad.close()
    await bad.closed
    const check = await client()
    await check.negotiate()
    expect((await check.read(MIB, 65536)).data).toEqual(basePattern(MIB, 65536))
    await serverStillWorks()
  })

  it('survives a client that disconnects with requests in flight, and keeps their writes whole', async () => {
    served = await serveOverlay()
    const bad = await client()
    await bad.negotiate()
    for (let index = 0; index < 32; index++) {
      bad.sendRequest({
        type: COMMAND.WRITE,
        offset: index * 65536,
        data: Buffer.alloc(65536, 0x50 + index),
      })
      bad.sendRequest({ type: COMMAND.READ, offset: index * 65536, length: 65536 })
    }
    bad.close()
    await bad.closed
    await served.server.close()
    // Every write the server accepted completed as a whole: each cluster is old or new.
    for (let index = 0; index < 32; index++) {
      const data = await served.disk.read(index * 65536, 65536)
      expect(
        data.equals(Buffer.alloc(65536, 0x50 + index)) ||
          data.equals(basePattern(index * 65536, 65536)),
      ).toBe(true)
    }
  })

  it('disconnects a client stuck in the handshake after the timeout', async () => {
    served = await serveOverlay({ server: { limits: { handshakeTimeoutMs: 200 } } })
    const idle = await client()
    await idle.greeting()
    await idle.closed
    expect(served.logs.some((event) => /handshake took longer/.test(event.message))).toBe(true)
    await serverStillWorks()
  })

  it('refuses connections beyond the limit and serves the others', async () => {
    served = await serveOverlay({ server: { maxConnections: 2 } })
    const first = await client()
    const second = await client()
    await first.negotiate()
    await second.negotiate()
    const third = await client()
    await third.closed
    expect(served.logs.some((event) => /2 already open/.test(event.message))).toBe(true)
    expect((await first.read(0, 512)).data).toEqual(basePattern(0, 512))
    // Once a client leaves, its slot is free again.
    const freed = new Promise((resolve) => served!.server.once('disconnect', resolve))
    first.close()
    await freed
    const fourth = await client()
    await fourth.negotiate()
    expect((await fourth.read(512, 512)).data).toEqual(basePattern(512, 512))
    expect((await second.read(0, 512)).data).toEqual(basePattern(0, 512))
  })

  it('stops reading a client that never reads its replies, without failing others', async () => {
    served = await serveOverlay()
    const greedy = await client()
    await greedy.negotiate()
    greedy.socket.pause()
    const before = process.memoryUsage().arrayBuffers
    // 200 reads of 1 MiB = 200 MiB of replies the client never reads; the server must hold
    // back (bounded requests in flight) instead of buffering them all.
    for (let index = 0; index < 200; index++)
      greedy.sendRequest({ type: COMMAND.READ, offset: (index % 4) * MIB, length: MIB })
    await new Promise((resolve) => setTimeout(resolve, 500))
    await serverStillWorks()
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(120 * MIB)
    greedy.close()
  })

  it('answers unknown commands with EINVAL on a simple-reply connection', async () => {
    served = await serveOverlay()
    const odd = await client()
    await odd.negotiate({ structured: false, meta: false })
    const reply = await odd.command(200, 0, 0)
    expect(reply.chunks[0]!.kind).toBe('simple')
    expect(reply.error).toBe(NBD_ERROR.EINVAL)
    expect((await odd.command(COMMAND.BLOCK_STATUS, 0, 512)).error).toBe(NBD_ERROR.EINVAL)
    await serverStillWorks()
  })
})
