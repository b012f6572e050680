import { describe, expect, it } from 'vitest'
import {
  CHUNK,
  decodeRequest,
  encodeBlockStatusChunk,
  encodeDataChunkHeader,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeHoleChunk,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeOptionReply,
  encodeRequest,
  encodeSimpleReply,
  REPLY_FLAG,
  truncateUtf8,
} from '../../../main/nbd/protocol'
import { nbdUri } from '../../../main/nbd/uri'

const handle = Buffer.from('0102030405060708', 'hex')

describe('NBD message codecs', () => {
  it('encodes the greeting and option replies byte for byte', () => {
    expect(encodeGreeting(3).toString('hex')).toBe('4e42444d41474943' + '49484156454f5054' + '0003')
    expect(encodeOptionReply(7, 1).toString('hex')).toBe(
      '0003e889045565a9' + '00000007' + '00000001' + '00000000',
    )
    expect(encodeOptionReply(3, 0x80000001, Buffer.from('hi')).toString('hex')).toBe(
      '0003e889045565a9' + '00000003' + '80000001' + '00000002' + '6869',
    )
    expect(encodeInfoExport(2 ** 40 + 5, 0x10d).toString('hex')).toBe(
      '0000' + '0000010000000005' + '010d',
    )
    expect(encodeInfoBlockSize(1, 4096, 2 ** 25).toString('hex')).toBe(
      '0003' + '00000001' + '00001000' + '02000000',
    )
    expect(encodeExportNameReply(512, 1, true)).toHaveLength(10)
    expect(encodeExportNameReply(512, 1, false)).toHaveLength(134)
  })

  it('round-trips request headers, and flags offsets beyond 2^53', () => {
    const encoded = encodeRequest({ flags: 1, type: 1, handle, offset: 2 ** 40 + 3, length: 4096 })
    expect(encoded.toString('hex')).toBe(
      '25609513' + '0001' + '0001' + '0102030405060708' + '0000010000000003' + '00001000',
    )
    const decoded = decodeRequest(encoded)
    expect(decoded).toMatchObject({
      magic: 0x25609513,
      flags: 1,
      type: 1,
      offset: 2 ** 40 + 3,
      length: 4096,
    })
    expect(decoded.handle).toEqual(handle)
    const huge = Buffer.from(encoded)
    huge.writeUInt32BE(0x00200000, 16)
    expect(decodeRequest(huge).offset).toBeNull()
    huge.writeUInt32BE(0x001fffff, 16)
    huge.writeUInt32BE(0xffffffff, 20)
    expect(decodeRequest(huge).offset).toBe(Number.MAX_SAFE_INTEGER)
  })

  it('encodes replies and structured chunks', () => {
    expect(encodeSimpleReply(handle, 22).toString('hex')).toBe(
      '67446698' + '00000016' + '0102030405060708',
    )
    const data = encodeDataChunkHeader(handle, true, 4096, 512)
    expect(data.toString('hex')).toBe(
      '668e33ef' + '0001' + '0001' + '0102030405060708' + '00000208' + '0000000000001000',
    )
    const hole = encodeHoleChunk(handle, false, 8192, 1024)
    expect(hole.toString('hex')).toBe(
      '668e33ef' +
        '0000' +
        '0002' +
        '0102030405060708' +
        '0000000c' +
        '0000000000002000' +
        '00000400',
    )
    const status = encodeBlockStatusChunk(handle, true, 1, [
      { length: 4096, flags: 3 },
      { length: 512, flags: 0 },
    ])
    expect(status.toString('hex')).toBe(
      '668e33ef' +
        '0001' +
        '0005' +
        '0102030405060708' +
        '00000014' +
        '00000001' +
        '00001000' +
        '00000003' +
        '00000200' +
        '00000000',
    )
    const error = encodeErrorChunk(handle, 5, 'bad')
    expect(error.readUInt16BE(4)).toBe(REPLY_FLAG.DONE)
    expect(error.readUInt16BE(6)).toBe(CHUNK.ERROR)
    expect(error.subarray(20).toString('hex')).toBe('00000005' + '0003' + '626164')
  })

  it('cuts long messages on a character boundary', () => {
    expect(truncateUtf8('aé', 2).toString()).toBe('a')
    expect(truncateUtf8('abc', 5).toString()).toBe('abc')
    expect(encodeErrorChunk(handle, 5, 'x'.repeat(10_000)).readUInt16BE(24)).toBe(4096)
  })

  it('builds NBD URIs as libnbd and QEMU read them', () => {
    expect(nbdUri({ kind: 'unix', path: '/tmp/a b.sock' }, '', false)).toBe(
      'nbd+unix:///?socket=/tmp/a%20b.sock',
    )
    expect(nbdUri({ kind: 'unix', path: '/run/x.sock' }, 'disk 1', true)).toBe(
      'nbds+unix:///disk%201?socket=/run/x.sock',
    )
    expect(nbdUri({ kind: 'tcp', host: '127.0.0.1', port: 10809 }, 'd', false)).toBe(
      'nbd://127.0.0.1:10809/d',
    )
    expect(nbdUri({ kind: 'tcp', host: '::1', port: 5 }, '', true)).toBe('nbds://[::1]:5/')
  })
})
