// The handshake (main/nbd/handshake.ts) over a real socket: greeting, options, export info,
// meta contexts, and what a hostile client's options get.
import { describe, expect, it } from 'vitest'
import {
  COMMAND,
  INFO,
  NBD_ERROR,
  OPTION,
  REPLY,
  TRANSMISSION_FLAG,
} from '../../../main/nbd/protocol'
import { basePattern, MIB, OVERLAY_SIZE, perTestServer } from '../../helpers/nbd/fixtures'
import { NbdTestClient } from '../../helpers/nbd/nbd-test-client'

const nbd = perTestServer()

describe('NBD handshake', () => {
  it('greets with NBDMAGIC, IHAVEOPT and the fixed newstyle and no-zeroes flags', async () => {
    await nbd.setup()
    const greeting = await (await nbd.client()).greeting()
    expect(greeting.magic).toBe(0x4e42444d41474943n)
    expect(greeting.optionMagic).toBe(0x49484156454f5054n)
    expect(greeting.flags).toBe(3)
  })

  it('answers NBD_OPT_GO with the size, the transmission flags and the block sizes', async () => {
    await nbd.setup()
    const result = await (await nbd.client()).negotiate()
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
    await nbd.setup({ readOnly: true })
    const result = await (await nbd.client()).negotiate({ structured: false, meta: false })
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
    await nbd.setup({ exportName: 'disk' })
    const connection = await nbd.client()
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
    await nbd.setup({ exportName: 'disk' })
    const connection = await nbd.client()
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
    await nbd.setup()
    const connection = await nbd.client()
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
    await nbd.setup()
    for (const clientFlags of [1, 3]) {
      const connection = await nbd.client()
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
    await nbd.setup()
    const connection = await nbd.client()
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
    await nbd.setup()
    const connection = await nbd.client()
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
    await nbd.setup()
    const connection = await nbd.client()
    await connection.greeting()
    connection.sendClientFlags(1)
    connection.sendOption(OPTION.ABORT)
    expect((await connection.readOptionReply()).type).toBe(REPLY.ACK)
    await connection.closed
  })
})

describe('NBD handshake against hostile clients', () => {
  it('closes on unknown client flags', async () => {
    const served = await nbd.setup()
    const bad = await nbd.client()
    await bad.greeting()
    bad.sendClientFlags(0x80)
    await bad.closed
    expect(served.logs.some((event) => /unknown client flags/.test(event.message))).toBe(true)
    await nbd.stillWorks()
  })

  it('closes on an option without IHAVEOPT', async () => {
    await nbd.setup()
    const bad = await nbd.client()
    await bad.greeting()
    bad.sendClientFlags(1)
    bad.sendOption(OPTION.LIST, Buffer.alloc(0), 0, 0x1234n)
    await bad.closed
    await nbd.stillWorks()
  })

  it('closes on an option that claims gigabytes of data, without buffering it', async () => {
    const served = await nbd.setup()
    const bad = await nbd.client()
    await bad.greeting()
    bad.sendClientFlags(1)
    bad.sendOption(OPTION.GO, Buffer.alloc(100), 0xffffffff)
    await bad.closed
    expect(served.logs.some((event) => /4294967295 bytes of data/.test(event.message))).toBe(true)
    await nbd.stillWorks()
  })

  it('answers malformed option data with NBD_REP_ERR_INVALID and keeps the connection', async () => {
    await nbd.setup()
    const bad = await nbd.client()
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
    await nbd.setup({ exportName: 'disk' })
    const bad = await nbd.client()
    await bad.greeting()
    bad.sendClientFlags(1)
    bad.sendOption(OPTION.EXPORT_NAME, Buffer.from('nope'))
    await bad.closed
    const good = await nbd.client()
    await good.negotiate({ exportName: 'disk' })
  })
})
