import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { openImage } from '../../../main/engine/open'
import {
  COMMAND,
  COMMAND_FLAG,
  INFO,
  NBD_ERROR,
  OPTION,
  REPLY,
  STATE,
  TRANSMISSION_FLAG,
} from '../../../main/nbd/protocol'
import {
  basePattern,
  BASE_SIZE,
  MIB,
  OVERLAY_SIZE,
  serveOverlay,
  type ServedImage,
} from './fixtures'
import { NbdTestClient } from './nbd-test-client'

let served: ServedImage | null = null
const clients: NbdTestClient[] = []

async function setup(options: Parameters<typeof serveOverlay>[0] = {}): Promise<ServedImage> {
  served = await serveOverlay(options)
  return served
}

async function client(): Promise<NbdTestClient> {
  const connection = await NbdTestClient.connect(served!.socket)
  clients.push(connection)
  return connection
}

afterEach(async () => {
  for (const connection of clients.splice(0)) connection.close()
  await served?.cleanup()
  served = null
})

describe('NBD handshake', () => {
  it('greets with NBDMAGIC, IHAVEOPT and the fixed newstyle and no-zeroes flags', async () => {
    await setup()
    const greeting = await (await client()).greeting()
    expect(greeting.magic).toBe(0x4e42444d41474943n)
    expect(greeting.optionMagic).toBe(0x49484156454f5054n)
    expect(greeting.flags).toBe(3)
  })

  it('answers NBD_OPT_GO with the size, the transmission flags and the block sizes', async () => {
    await setup()
    const result = await (await client()).negotiate()
    expect(result.size).toBe(OVERLAY_SIZE)
    const expected =
      TRANSMISSION_FLAG.HAS_FLAGS |
      TRANSMISSION_FLAG.SEND_FLUSH |
      TRANSMISSION_FLAG.SEND_FUA |
      TRANSMISSION_FLAG.SEND_TRIM |
      TRANSMISSION_FLAG.SEND_WRITE_ZEROES |
      TRANSMISSION_FLAG.SEND_DF |
      TRANSMISSION_FLAG.CAN_MULTI_CONN |
      TRANSMISSION_FLAG.SEND_FAST_ZERO
    expect(result.flags).toBe(expected)
    expect(result.blockSize).toEqual({ minimum: 1, preferred: 64 * 1024, maximum: 32 * MIB })
  })

  it('advertises a read-only export without write flags', async () => {
    await setup({ readOnly: true })
    const result = await (await client()).negotiate({ structured: false, meta: false })
    expect(result.flags & TRANSMISSION_FLAG.READ_ONLY).toBeTruthy()
    expect(
      result.flags &
        (TRANSMISSION_FLAG.SEND_FUA |
          TRANSMISSION_FLAG.SEND_TRIM |
          TRANSMISSION_FLAG.SEND_WRITE_ZEROES),
    ).toBe(0)
    // DF is only offered with structured replies.
    expect(result.flags & TRANSMISSION_FLAG.SEND_DF).toBe(0)
  })

  it('lists the export, and answers NBD_OPT_INFO with its name and description', async () => {
    await setup({ exportName: 'disk' })
    const connection = await client()
    await connection.greeting()
    connection.sendClientFlags(1)
    connection.sendOption(OPTION.LIST)
    const list = await connection.readOptionReplies()
    expect(list.map((reply) => reply.type)).toEqual([REPLY.SERVER, REPLY.ACK])
    expect(list[0]!.data.readUInt32BE(0)).toBe(4)
    expect(list[0]!.data.subarray(4, 8).toString()).toBe('disk')
    expect(list[0]!.data.subarray(8).toString()).toBe('test overlay')

    connection.sendOption(
      OPTION.INFO,
      NbdTestClient.infoData('disk', [INFO.NAME, INFO.DESCRIPTION]),
    )
    const info = await connection.readOptionReplies()
    const types = info
      .filter((reply) => reply.type === REPLY.INFO)
      .map((reply) => reply.data.readUInt16BE(0))
    expect(types.sort()).toEqual([INFO.EXPORT, INFO.NAME, INFO.DESCRIPTION, INFO.BLOCK_SIZE].sort())
    expect(info[info.length - 1]!.type).toBe(REPLY.ACK)
    // NBD_OPT_INFO does not enter transmission: more options work.
    connection.sendOption(OPTION.INFO, NbdTestClient.infoData('', []))
    expect((await connection.readOptionReplies()).at(-1)!.type).toBe(REPLY.ACK)
  })

  it('refuses an unknown export name with NBD_REP_ERR_UNKNOWN and lets the client go on', async () => {
    await setup({ exportName: 'disk' })
    const connection = await client()
    await connection.greeting()
    connection.sendClientFlags(1)
    connection.sendOption(OPTION.GO, NbdTestClient.infoData('other', []))
    const refused = await connection.readOptionReplies()
    expect(refused).toHaveLength(1)
    expect(refused[0]!.type).toBe(REPLY.ERR_UNKNOWN)
    connection.sendOption(OPTION.GO, NbdTestClient.infoData('disk', []))
    expect((await connection.readOptionReplies()).at(-1)!.type).toBe(REPLY.ACK)
    const read = await connection.read(0, 512)
    expect(read.error).toBe(0)
    expect(read.data).toEqual(basePattern(0, 512))
  })

  it('answers unknown options with NBD_REP_ERR_UNSUP and keeps negotiating', async () => {
    await setup()
    const connection = await client()
    await connection.greeting()
    connection.sendClientFlags(1)
    for (const option of [OPTION.PEEK_EXPORT, OPTION.EXTENDED_HEADERS, 999, 0x7fffffff]) {
      connection.sendOption(option, Buffer.from('xyz'))
      const reply = await connection.readOptionReply()
      expect(reply.option).toBe(option)
      expect(reply.type).toBe(REPLY.ERR_UNSUP)
    }
    connection.sendOption(OPTION.STARTTLS)
    expect((await connection.readOptionReply()).type).toBe(REPLY.ERR_POLICY)
    connection.sendOption(OPTION.GO, NbdTestClient.infoData('', []))
    expect((await connection.readOptionReplies()).at(-1)!.type).toBe(REPLY.ACK)
  })

  it('supports the old NBD_OPT_EXPORT_NAME ending, with and without the 124 zero bytes', async () => {
    await setup()
    for (const clientFlags of [1, 3]) {
      const connection = await client()
      await connection.greeting()
      connection.sendClientFlags(clientFlags)
      connection.sendOption(OPTION.EXPORT_NAME, Buffer.alloc(0))
      const reply = await connection.incoming.read(clientFlags === 3 ? 10 : 134)
      expect(Number(reply.readBigUInt64BE(0))).toBe(OVERLAY_SIZE)
      expect(reply.readUInt16BE(8) & TRANSMISSION_FLAG.HAS_FLAGS).toBeTruthy()
      if (clientFlags === 1) expect(reply.subarray(10).every((byte) => byte === 0)).toBe(true)
      const read = await connection.read(512, 512)
      expect(read.chunks[0]!.kind).toBe('simple')
      expect(read.data).toEqual(basePattern(512, 512))
    }
  })

  it('lists and selects base:allocation only after structured replies', async () => {
    await setup()
    const connection = await client()
    await connection.greeting()
    connection.sendClientFlags(1)
    connection.sendOption(OPTION.SET_META_CONTEXT, NbdTestClient.metaData('', ['base:allocation']))
    expect((await connection.readOptionReply()).type).toBe(REPLY.ERR_INVALID)
    connection.sendOption(OPTION.STRUCTURED_REPLY)
    expect((await connection.readOptionReply()).type).toBe(REPLY.ACK)
    for (const queries of [[], ['base:'], ['base:allocation']]) {
      connection.sendOption(OPTION.LIST_META_CONTEXT, NbdTestClient.metaData('', queries))
      const replies = await connection.readOptionReplies()
      expect(replies.map((reply) => reply.type)).toEqual([REPLY.META_CONTEXT, REPLY.ACK])
      expect(replies[0]!.data.subarray(4).toString()).toBe('base:allocation')
    }
    connection.sendOption(
      OPTION.LIST_META_CONTEXT,
      NbdTestClient.metaData('', ['qemu:dirty-bitmap:x']),
    )
    expect((await connection.readOptionReplies()).map((reply) => reply.type)).toEqual([REPLY.ACK])
    connection.sendOption(OPTION.LIST_META_CONTEXT, NbdTestClient.metaData('', ['no-namespace']))
    expect((await connection.readOptionReply()).type).toBe(REPLY.ERR_INVALID)
  })

  it('refuses NBD_CMD_BLOCK_STATUS when no context was selected', async () => {
    await setup()
    const connection = await client()
    await connection.greeting()
    connection.sendClientFlags(1)
    connection.sendOption(OPTION.STRUCTURED_REPLY)
    await connection.readOptionReply()
    connection.structured = true
    connection.sendOption(
      OPTION.SET_META_CONTEXT,
      NbdTestClient.metaData('', ['qemu:allocation-depth']),
    )
    expect((await connection.readOptionReplies()).map((reply) => reply.type)).toEqual([REPLY.ACK])
    connection.sendOption(OPTION.GO, NbdTestClient.infoData('', []))
    await connection.readOptionReplies()
    const status = await connection.command(COMMAND.BLOCK_STATUS, 0, 4096)
    expect(status.error).toBe(NBD_ERROR.EINVAL)
  })

  it('acknowledges NBD_OPT_ABORT and closes', async () => {
    await setup()
    const connection = await client()
    await connection.greeting()
    connection.sendClientFlags(1)
    connection.sendOption(OPTION.ABORT)
    expect((await connection.readOptionReply()).type).toBe(REPLY.ACK)
    await connection.closed
  })
})

describe('NBD transmission', () => {
  it('reads base data as data chunks and unallocated zeros as holes', async () => {
    await setup()
    const connection = await client()
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
    await setup()
    const structured = await client()
    await structured.negotiate()
    const start = BASE_SIZE - 64 * 1024
    const unfragmented = await structured.read(start, 128 * 1024, COMMAND_FLAG.DF)
    expect(unfragmented.dataChunks).toBe(1)
    expect(unfragmented.holes).toEqual([])
    expect(unfragmented.data.subarray(0, 64 * 1024)).toEqual(basePattern(start, 64 * 1024))
    expect(unfragmented.data.subarray(64 * 1024).every((byte) => byte === 0)).toBe(true)

    const simple = await client()
    await simple.negotiate({ structured: false, meta: false })
    const read = await simple.read(start, 128 * 1024)
    expect(read.chunks[0]!.kind).toBe('simple')
    expect(read.data.equals(unfragmented.data)).toBe(true)
  })

  it('writes, reads back, and makes the data durable on flush and FUA', async () => {
    const image = await setup()
    const connection = await client()
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
    await setup()
    const connection = await client()
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
    await setup()
    const connection = await client()
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
    await setup()
    const connection = await client()
    await connection.negotiate()
    await connection.writeData(0, Buffer.alloc(65536, 7))
    expect((await connection.command(COMMAND.TRIM, 0, 65536, COMMAND_FLAG.FUA)).error).toBe(0)
    expect((await connection.read(0, 65536)).data).toEqual(Buffer.alloc(65536, 7))
  })

  it('answers bad requests with the errors proto.md asks for', async () => {
    await setup()
    const connection = await client()
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
    await setup({ readOnly: true })
    const connection = await client()
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
    await setup()
    const connection = await client()
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
    const image = await setup()
    const writer = await client()
    const flusher = await client()
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
    await setup()
    const connection = await client()
    await connection.negotiate()
    connection.sendRequest({ type: COMMAND.WRITE, offset: 0, data: Buffer.alloc(65536, 9) })
    connection.disconnect()
    const reply = await connection.readChunk()
    expect(reply.error).toBe(0)
    await connection.closed
    const other = await client()
    await other.negotiate()
    expect((await other.read(0, 65536)).data).toEqual(Buffer.alloc(65536, 9))
  })

  it('on close, finishes requests in flight, closes clients and flushes the disk', async () => {
    const image = await setup()
    const connection = await client()
    await connection.negotiate()
    expect((await connection.writeData(MIB, Buffer.alloc(4096, 0x77))).error).toBe(0)
    await image.server.close()
    await connection.closed
    const reopened = await openImage(join(image.folder, 'overlay.add-cow'), { readOnly: true })
    try {
      expect(await reopened.read(MIB, 4096)).toEqual(Buffer.alloc(4096, 0x77))
    } finally {
      await reopened.close()
    }
  })
})
