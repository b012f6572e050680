// Transmission (main/nbd/transmission.ts) over a real socket: every command, its validation
// and its replies, and what a hostile client's requests get.
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { Disk } from '../../../main/engine/disk'
import { EngineError } from '../../../main/engine/errors'
import { openImage } from '../../../main/engine/open'
import {
  COMMAND,
  COMMAND_FLAG,
  NBD_ERROR,
  STATE,
  TRANSMISSION_FLAG,
} from '../../../main/nbd/protocol'
import {
  basePattern,
  BASE_SIZE,
  MIB,
  OVERLAY_SIZE,
  perTestServer,
} from '../../helpers/nbd/fixtures'
import { NbdServer } from '../../../main/nbd/server'
import { MAGIC, NbdTestClient } from '../../helpers/nbd/nbd-test-client'

const nbd = perTestServer()

describe('NBD transmission', () => {
  it('reads base data as data chunks and unallocated zeros as holes', async () => {
    await nbd.setup()
    const connection = await nbd.client()
    await connection.negotiate()
    const start = BASE_SIZE - MIB
    const read = await connection.read(start, 2 * MIB)
    expect(read.error).toBe(0)
    expect(read.holes).toEqual([{ offset: BASE_SIZE, length: MIB }])
    // Buffer.equals: vitest's toEqual compares megabytes element by element, slowly.
    expect(read.data.subarray(0, MIB).equals(basePattern(start, MIB))).toBe(true)
    expect(read.data.subarray(MIB).every((byte) => byte === 0)).toBe(true)
  })

  it('sends one data chunk with NBD_CMD_FLAG_DF, and plain data with simple replies', async () => {
    await nbd.setup()
    const structured = await nbd.client()
    await structured.negotiate()
    const start = BASE_SIZE - 64 * 1024
    const unfragmented = await structured.read(start, 128 * 1024, COMMAND_FLAG.DF)
    expect(unfragmented.dataChunks).toBe(1)
    expect(unfragmented.holes).toEqual([])
    expect(unfragmented.data.subarray(0, 64 * 1024)).toEqual(basePattern(start, 64 * 1024))
    expect(unfragmented.data.subarray(64 * 1024).every((byte) => byte === 0)).toBe(true)

    const simple = await nbd.client()
    await simple.negotiate({ structured: false, meta: false })
    const read = await simple.read(start, 128 * 1024)
    expect(read.chunks[0]!.kind).toBe('simple')
    expect(read.data.equals(unfragmented.data)).toBe(true)
  })

  it('writes, reads back, and makes the data durable on flush and FUA', async () => {
    const image = await nbd.setup()
    const connection = await nbd.client()
    await connection.negotiate()
    const data = Buffer.alloc(100_000, 0xab)
    expect((await connection.writeData(70_000, data)).error).toBe(0)
    expect(
      (await connection.writeData(6 * MIB, Buffer.alloc(512, 0xcd), COMMAND_FLAG.FUA)).error,
    ).toBe(0)
    const read = await connection.read(69_000, 102_000)
    expect(read.data.subarray(0, 1000)).toEqual(basePattern(69_000, 1000))
    expect(read.data.subarray(1000, 101_000)).toEqual(data)
    expect(read.data.subarray(101_000)).toEqual(basePattern(170_000, 1000))
    expect((await connection.command(COMMAND.FLUSH)).error).toBe(0)

    // A second, independent open of the files sees what the flush made durable.
    const reopened = await openImage(join(image.folder, 'overlay.add-cow'), { readOnly: true })
    try {
      expect(await reopened.read(70_000, 100_000)).toEqual(data)
      expect(await reopened.read(6 * MIB, 512)).toEqual(Buffer.alloc(512, 0xcd))
    } finally {
      await reopened.close()
    }
  })

  it('zeroes ranges, fast-zeroes only where nothing must be written, and honours NO_HOLE', async () => {
    await nbd.setup()
    const connection = await nbd.client()
    await connection.negotiate()
    expect((await connection.command(COMMAND.WRITE_ZEROES, 4096, 8192)).error).toBe(0)
    expect((await connection.read(0, 16384)).data).toEqual(
      Buffer.concat([basePattern(0, 4096), Buffer.alloc(8192), basePattern(12288, 4096)]),
    )

    const fastOnData = await connection.command(
      COMMAND.WRITE_ZEROES,
      MIB,
      65536,
      COMMAND_FLAG.FAST_ZERO,
    )
    expect(fastOnData.error).toBe(NBD_ERROR.ENOTSUP)
    expect((await connection.read(MIB, 65536)).data).toEqual(basePattern(MIB, 65536))
    expect(
      (await connection.command(COMMAND.WRITE_ZEROES, 5 * MIB, MIB, COMMAND_FLAG.FAST_ZERO)).error,
    ).toBe(0)

    expect(
      (await connection.command(COMMAND.WRITE_ZEROES, 6 * MIB, 65536, COMMAND_FLAG.NO_HOLE)).error,
    ).toBe(0)
    const status = await connection.command(COMMAND.BLOCK_STATUS, 6 * MIB, 131072)
    // NO_HOLE allocated the first cluster (data, reads as zeros); the next is still a hole.
    expect(status.extents).toEqual([
      { length: 65536, flags: 0 },
      { length: 65536, flags: STATE.HOLE | STATE.ZERO },
    ])
  })

  it('reports block status: data, holes, REQ_ONE, and errors for bad ranges', async () => {
    await nbd.setup()
    const connection = await nbd.client()
    await connection.negotiate()
    const status = await connection.command(COMMAND.BLOCK_STATUS, 0, OVERLAY_SIZE)
    expect(status.error).toBe(0)
    expect(status.extents).toEqual([
      { length: BASE_SIZE, flags: 0 },
      { length: OVERLAY_SIZE - BASE_SIZE, flags: STATE.HOLE | STATE.ZERO },
    ])
    const one = await connection.command(
      COMMAND.BLOCK_STATUS,
      BASE_SIZE - 4096,
      8192,
      COMMAND_FLAG.REQ_ONE,
    )
    expect(one.extents).toEqual([{ length: 4096, flags: 0 }])
    expect((await connection.command(COMMAND.BLOCK_STATUS, OVERLAY_SIZE - 512, 1024)).error).toBe(
      NBD_ERROR.EINVAL,
    )
    expect((await connection.command(COMMAND.BLOCK_STATUS, 0, 0)).error).toBe(NBD_ERROR.EINVAL)
  })

  it('trims without changing the guest view', async () => {
    await nbd.setup()
    const connection = await nbd.client()
    await connection.negotiate()
    await connection.writeData(0, Buffer.alloc(65536, 7))
    expect((await connection.command(COMMAND.TRIM, 0, 65536, COMMAND_FLAG.FUA)).error).toBe(0)
    expect((await connection.read(0, 65536)).data).toEqual(Buffer.alloc(65536, 7))
  })

  it('answers bad requests with the errors proto.md asks for', async () => {
    await nbd.setup()
    const connection = await nbd.client()
    await connection.negotiate()
    expect((await connection.read(OVERLAY_SIZE - 100, 200)).error).toBe(NBD_ERROR.EINVAL)
    expect((await connection.read(2 ** 60, 512)).error).toBe(NBD_ERROR.EINVAL)
    expect((await connection.writeData(OVERLAY_SIZE - 100, Buffer.alloc(200))).error).toBe(
      NBD_ERROR.ENOSPC,
    )
    expect((await connection.command(COMMAND.WRITE_ZEROES, OVERLAY_SIZE, 1)).error).toBe(
      NBD_ERROR.ENOSPC,
    )
    expect((await connection.command(COMMAND.TRIM, OVERLAY_SIZE, 1)).error).toBe(NBD_ERROR.EINVAL)
    expect((await connection.read(0, 32 * MIB + 1)).error).toBe(NBD_ERROR.EINVAL)
    expect((await connection.command(COMMAND.CACHE, 0, 512)).error).toBe(NBD_ERROR.EINVAL)
    expect((await connection.command(42, 0, 512)).error).toBe(NBD_ERROR.EINVAL)
    expect((await connection.read(0, 512, 0x100)).error).toBe(NBD_ERROR.EINVAL)
    expect((await connection.read(0, 512, COMMAND_FLAG.REQ_ONE)).error).toBe(NBD_ERROR.EINVAL)
    expect((await connection.command(COMMAND.FLUSH, 0, 512)).error).toBe(NBD_ERROR.EINVAL)
    const refused = await connection.writeData(0, Buffer.alloc(512), COMMAND_FLAG.DF)
    expect(refused.error).toBe(NBD_ERROR.EINVAL)
    expect(refused.message).toMatch(/flags/)
    // Nothing above changed the disk, and the connection still works.
    expect((await connection.read(0, 512)).data).toEqual(basePattern(0, 512))
    expect((await connection.read(0, 0)).error).toBe(0)
    expect((await connection.writeData(0, Buffer.alloc(0))).error).toBe(0)
  })

  it('refuses writes to a read-only export with EPERM', async () => {
    await nbd.setup({ readOnly: true })
    const connection = await nbd.client()
    await connection.negotiate()
    expect((await connection.writeData(0, Buffer.alloc(512, 1))).error).toBe(NBD_ERROR.EPERM)
    expect((await connection.command(COMMAND.WRITE_ZEROES, 0, 512)).error).toBe(NBD_ERROR.EPERM)
    expect((await connection.command(COMMAND.TRIM, 0, 512)).error).toBe(NBD_ERROR.EPERM)
    // FUA was not advertised, so it is an invalid flag here.
    expect((await connection.read(0, 512, COMMAND_FLAG.FUA)).error).toBe(NBD_ERROR.EINVAL)
    expect((await connection.command(COMMAND.FLUSH)).error).toBe(0)
    expect((await connection.read(0, 512)).data).toEqual(basePattern(0, 512))
  })

  it('pipelines many requests and matches every reply to its handle', async () => {
    await nbd.setup()
    const connection = await nbd.client()
    await connection.negotiate()
    const expected = new Map<bigint, Buffer>()
    for (let index = 0; index < 40; index++) {
      const offset = index * 100_000
      const data = Buffer.alloc(4096, index + 1)
      connection.sendRequest({ type: COMMAND.WRITE, offset, data })
      expected.set(connection.sendRequest({ type: COMMAND.READ, offset, length: 4096 }), data)
    }
    const seen = new Set<bigint>()
    let reads = 0
    while (seen.size < 80) {
      const chunk = await connection.readChunk()
      expect(chunk.error).toBe(0)
      if (chunk.flags & 1) seen.add(chunk.handle)
      if (chunk.type === 1) {
        reads++
        const data = expected.get(chunk.handle)!
        const offset = Number(chunk.payload.readBigUInt64BE(0))
        const result = chunk.payload.subarray(8)
        // Each read either ran before or after its write: old (base) data or the new data.
        const before = basePattern(offset, 4096)
        expect(result.equals(data) || result.equals(before)).toBe(true)
      }
    }
    expect(reads).toBe(40)
  })

  it('makes a flush on one connection cover writes completed on another (multi-conn)', async () => {
    const image = await nbd.setup()
    const writer = await nbd.client()
    const flusher = await nbd.client()
    await writer.negotiate()
    const flags = (await flusher.negotiate()).flags
    expect(flags & TRANSMISSION_FLAG.CAN_MULTI_CONN).toBeTruthy()
    expect((await writer.writeData(2 * MIB, Buffer.alloc(65536, 0x42))).error).toBe(0)
    expect((await flusher.read(2 * MIB, 65536)).data).toEqual(Buffer.alloc(65536, 0x42))
    expect((await flusher.command(COMMAND.FLUSH)).error).toBe(0)
    const reopened = await openImage(join(image.folder, 'overlay.add-cow'), { readOnly: true })
    try {
      expect(await reopened.read(2 * MIB, 65536)).toEqual(Buffer.alloc(65536, 0x42))
    } finally {
      await reopened.close()
    }
  })

  it('answers requests in flight before NBD_CMD_DISC, then closes', async () => {
    await nbd.setup()
    const connection = await nbd.client()
    await connection.negotiate()
    connection.sendRequest({ type: COMMAND.WRITE, offset: 0, data: Buffer.alloc(65536, 9) })
    connection.disconnect()
    const reply = await connection.readChunk()
    expect(reply.error).toBe(0)
    await connection.closed
    const other = await nbd.client()
    await other.negotiate()
    expect((await other.read(0, 65536)).data).toEqual(Buffer.alloc(65536, 9))
  })
})

describe('NBD transmission against hostile clients', () => {
  it('closes on a request with a bad magic', async () => {
    const served = await nbd.setup()
    const bad = await nbd.client()
    await bad.negotiate()
    bad.sendRequest({ type: COMMAND.READ, offset: 0, length: 512, magic: 0xdeadbeef })
    await bad.closed
    expect(served.logs.some((event) => /magic 0xdeadbeef/.test(event.message))).toBe(true)
    await nbd.stillWorks()
  })

  it('closes on a write that claims more than the maximum block size', async () => {
    await nbd.setup()
    const bad = await nbd.client()
    await bad.negotiate()
    bad.sendRequest({
      type: COMMAND.WRITE,
      offset: 0,
      length: 0xffffffff,
      data: Buffer.alloc(4096, 0xee),
    })
    await bad.closed
    await nbd.stillWorks()
    const check = await nbd.client()
    await check.negotiate()
    expect((await check.read(0, 4096)).data).toEqual(basePattern(0, 4096))
  })

  it('drops a write whose payload never fully arrives, and applies nothing of it', async () => {
    await nbd.setup()
    const bad = await nbd.client()
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
    const check = await nbd.client()
    await check.negotiate()
    expect((await check.read(MIB, 65536)).data).toEqual(basePattern(MIB, 65536))
    await nbd.stillWorks()
  })

  it('survives a client that disconnects with requests in flight, and keeps their writes whole', async () => {
    const served = await nbd.setup()
    const bad = await nbd.client()
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

  it('answers unknown commands with EINVAL on a simple-reply connection', async () => {
    await nbd.setup()
    const odd = await nbd.client()
    await odd.negotiate({ structured: false, meta: false })
    const reply = await odd.command(200, 0, 0)
    expect(reply.chunks[0]!.kind).toBe('simple')
    expect(reply.error).toBe(NBD_ERROR.EINVAL)
    expect((await odd.command(COMMAND.BLOCK_STATUS, 0, 512)).error).toBe(NBD_ERROR.EINVAL)
    await nbd.stillWorks()
  })
})

/** The served disk, failing every read that reaches `from` or beyond. */
function failingFrom(disk: Disk, from: number): Disk {
  return new Proxy(disk, {
    get(target, property, receiver) {
      // Read through readInto, where the error is simulated, not sent from the files.
      if (property === 'mapFiles') return undefined
      if (property === 'readInto') {
        return async (buffer: Uint8Array, offset: number) => {
          if (offset + buffer.length > from)
            throw new EngineError('IO_ERROR', `simulated read error at ${offset}`)
          return target.readInto(buffer, offset)
        }
      }
      const value = Reflect.get(target, property, receiver) as unknown
      return typeof value === 'function' ? (value as () => unknown).bind(target) : value
    },
  })
}

describe('NBD reads bigger than a piece', () => {
  const whole = Buffer.concat([basePattern(0, BASE_SIZE), Buffer.alloc(OVERLAY_SIZE - BASE_SIZE)])

  it('arrive whole as structured chunks, one data chunk (DF), or a simple reply', async () => {
    await nbd.setup()
    const structured = await nbd.client()
    await structured.negotiate()
    const chunked = await structured.read(0, OVERLAY_SIZE)
    expect(chunked.error).toBe(0)
    expect(chunked.data.equals(whole)).toBe(true)
    expect(chunked.holes.reduce((sum, hole) => sum + hole.length, 0)).toBe(OVERLAY_SIZE - BASE_SIZE)
    const unfragmented = await structured.read(MIB, 6 * MIB + 100, COMMAND_FLAG.DF)
    expect(unfragmented.dataChunks).toBe(1)
    expect(unfragmented.data.equals(whole.subarray(MIB, 7 * MIB + 100))).toBe(true)
    const simple = await nbd.client()
    await simple.negotiate({ structured: false, meta: false })
    const plain = await simple.read(100, 7 * MIB)
    expect(plain.error).toBe(0)
    expect(plain.data.equals(whole.subarray(100, 7 * MIB + 100))).toBe(true)
    // A simple reply to a read of 0 bytes is its header alone.
    expect((await simple.read(5, 0)).chunks).toHaveLength(1)
    expect((await simple.read(5, 10)).data.equals(whole.subarray(5, 15))).toBe(true)
  })

  it('let other replies through between their pieces, each reply whole', async () => {
    await nbd.setup()
    const connection = await nbd.client()
    await connection.negotiate()
    const expected = new Map<bigint, { offset: number; length: number }>()
    const send = (offset: number, length: number, flags = 0): void => {
      expected.set(connection.sendRequest({ type: COMMAND.READ, offset, length, flags }), {
        offset,
        length,
      })
    }
    send(0, 8 * MIB, COMMAND_FLAG.DF)
    for (let index = 0; index < 20; index++) send(index * 300_000, 4096)
    send(0, 8 * MIB)
    const results = new Map<bigint, Buffer>()
    let open = expected.size
    while (open > 0) {
      const chunk = await connection.readChunk()
      expect(chunk.error).toBe(0)
      const request = expected.get(chunk.handle)!
      const target = results.get(chunk.handle) ?? Buffer.alloc(request.length)
      results.set(chunk.handle, target)
      if (chunk.type === 1) {
        const at = Number(chunk.payload.readBigUInt64BE(0)) - request.offset
        chunk.payload.copy(target, at, 8)
      }
      if (chunk.flags & 1) open--
    }
    for (const [handle, request] of expected) {
      const data = whole.subarray(request.offset, request.offset + request.length)
      expect(results.get(handle)!.equals(data), `read at ${request.offset}`).toBe(true)
    }
  })

  it('end with an error chunk, or a cut connection for a simple reply, when a later piece fails', async () => {
    const served = await nbd.setup()
    const server = new NbdServer({
      exports: [{ name: '', disk: failingFrom(served.disk, 3 * MIB) }],
    })
    server.on('log', () => undefined)
    const socket = join(served.folder, 'failing.sock')
    await server.listen({ socket })
    try {
      const structured = await NbdTestClient.connect(socket)
      await structured.negotiate()
      const chunked = await structured.read(0, 8 * MIB)
      expect(chunked.error).toBe(NBD_ERROR.EIO)
      expect(chunked.message).toMatch(/simulated read error/)
      const padded = await structured.read(0, 8 * MIB, COMMAND_FLAG.DF)
      expect(padded.error).toBe(NBD_ERROR.EIO)
      expect(padded.chunks.map((chunk) => chunk.type)).toEqual([1, 0x8001])
      expect(padded.data.subarray(0, 3 * MIB).equals(whole.subarray(0, 3 * MIB))).toBe(true)
      expect(padded.data.subarray(3 * MIB).every((byte) => byte === 0)).toBe(true)
      // A failure in the first piece is an ordinary error reply, and the connection goes on.
      expect((await structured.read(6 * MIB, 2 * MIB, COMMAND_FLAG.DF)).error).toBe(NBD_ERROR.EIO)
      expect((await structured.read(0, 4096)).data.equals(whole.subarray(0, 4096))).toBe(true)
      structured.close()
      const simple = await NbdTestClient.connect(socket)
      await simple.negotiate({ structured: false, meta: false })
      simple.sendRequest({ type: COMMAND.READ, offset: 0, length: 8 * MIB })
      await simple.closed
    } finally {
      await server.close()
    }
  })
})
