import { bytes, u16, u32, u64, type FieldSpec } from '../engine/struct'

/**
 * NBD protocol constants and message layouts, as the NBD project's doc/proto.md defines them
 * (fixed newstyle handshake, structured replies, metadata contexts). All integers on the wire
 * are big-endian. Every message is described once as a table of fields, and both encoding and
 * decoding derive from that table.
 */

/** "NBDMAGIC": first 8 bytes the server sends (proto.md, "Newstyle negotiation"). */
export const NBD_MAGIC = 0x4e42444d41474943n
/** "IHAVEOPT": second server magic, and the magic of every client option. */
export const IHAVEOPT_MAGIC = 0x49484156454f5054n
/** Magic of every option reply (proto.md, "Fixed newstyle negotiation"). */
export const OPTION_REPLY_MAGIC = 0x3e889045565a9n
/** Magic of a transmission request. */
export const REQUEST_MAGIC = 0x25609513
/** Magic of a simple reply. */
export const SIMPLE_REPLY_MAGIC = 0x67446698
/** Magic of a structured reply chunk. */
export const STRUCTURED_REPLY_MAGIC = 0x668e33ef

/** Handshake flags the server sends. */
export const HANDSHAKE_FLAG = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const

/** Client flags (the 32 bits the client answers the greeting with). */
export const CLIENT_FLAG = {
  FIXED_NEWSTYLE: 1 << 0,
  NO_ZEROES: 1 << 1,
} as const

/** Option types (proto.md, "Option types"). */
export const OPTION = {
  EXPORT_NAME: 1,
  ABORT: 2,
  LIST: 3,
  PEEK_EXPORT: 4,
  STARTTLS: 5,
  INFO: 6,
  GO: 7,
  STRUCTURED_REPLY: 8,
  LIST_META_CONTEXT: 9,
  SET_META_CONTEXT: 10,
  EXTENDED_HEADERS: 11,
} as const

const ERROR_BIT = 0x80000000

/** Option reply types; errors have bit 31 set (proto.md, "Option reply types"). */
export const REPLY = {
  ACK: 1,
  SERVER: 2,
  INFO: 3,
  META_CONTEXT: 4,
  ERR_UNSUP: ERROR_BIT + 1,
  ERR_POLICY: ERROR_BIT + 2,
  ERR_INVALID: ERROR_BIT + 3,
  ERR_PLATFORM: ERROR_BIT + 4,
  ERR_TLS_REQD: ERROR_BIT + 5,
  ERR_UNKNOWN: ERROR_BIT + 6,
  ERR_SHUTDOWN: ERROR_BIT + 7,
  ERR_BLOCK_SIZE_REQD: ERROR_BIT + 8,
  ERR_TOO_BIG: ERROR_BIT + 9,
} as const

/** Information types of NBD_REP_INFO (proto.md, "NBD_REP_INFO"). */
export const INFO = {
  EXPORT: 0,
  NAME: 1,
  DESCRIPTION: 2,
  BLOCK_SIZE: 3,
} as const

/** Transmission flags (proto.md, "Transmission flags"). */
export const TRANSMISSION_FLAG = {
  HAS_FLAGS: 1 << 0,
  READ_ONLY: 1 << 1,
  SEND_FLUSH: 1 << 2,
  SEND_FUA: 1 << 3,
  ROTATIONAL: 1 << 4,
  SEND_TRIM: 1 << 5,
  SEND_WRITE_ZEROES: 1 << 6,
  SEND_DF: 1 << 7,
  CAN_MULTI_CONN: 1 << 8,
  SEND_RESIZE: 1 << 9,
  SEND_CACHE: 1 << 10,
  SEND_FAST_ZERO: 1 << 11,
} as const

/** Request types (proto.md, "Request types"). */
export const COMMAND = {
  READ: 0,
  WRITE: 1,
  DISC: 2,
  FLUSH: 3,
  TRIM: 4,
  CACHE: 5,
  WRITE_ZEROES: 6,
  BLOCK_STATUS: 7,
} as const

/** Command flags (proto.md, "Command flags"). */
export const COMMAND_FLAG = {
  FUA: 1 << 0,
  NO_HOLE: 1 << 1,
  DF: 1 << 2,
  REQ_ONE: 1 << 3,
  FAST_ZERO: 1 << 4,
} as const

/** Structured reply flags. */
export const REPLY_FLAG = {
  DONE: 1 << 0,
} as const

/** Structured reply chunk types (proto.md, "Structured reply types"). */
export const CHUNK = {
  NONE: 0,
  OFFSET_DATA: 1,
  OFFSET_HOLE: 2,
  BLOCK_STATUS: 5,
  ERROR: (1 << 15) + 1,
  ERROR_OFFSET: (1 << 15) + 2,
} as const

/** Flags of the base:allocation metadata context. */
export const STATE = {
  HOLE: 1 << 0,
  ZERO: 1 << 1,
} as const

/** Error values of replies (proto.md, "Error values"). */
export const NBD_ERROR = {
  EPERM: 1,
  EIO: 5,
  ENOMEM: 12,
  EINVAL: 22,
  ENOSPC: 28,
  EOVERFLOW: 75,
  ENOTSUP: 95,
  ESHUTDOWN: 108,
} as const

/** One of {@link NBD_ERROR}. */
export type NbdErrorValue = (typeof NBD_ERROR)[keyof typeof NBD_ERROR]

/** The only metadata context this server offers. */
export const BASE_ALLOCATION = 'base:allocation'
/** Longest string the protocol allows (export names, queries, messages). */
export const MAX_STRING_BYTES = 4096
/** Reserved zero bytes after NBD_OPT_EXPORT_NAME's reply unless NO_ZEROES was negotiated. */
export const EXPORT_NAME_PADDING = 124

/** A message layout: its fields and total length in bytes. */
export interface Layout<F extends Record<string, FieldSpec<unknown>>> {
  readonly length: number
  readonly fields: F
}

function layout<F extends Record<string, FieldSpec<unknown>>>(
  length: number,
  fields: F,
): Layout<F> {
  return { length, fields }
}

const BE = false

/** Server greeting: NBDMAGIC (0..8), IHAVEOPT (8..16), handshake flags (16..18). */
export const GREETING = layout(18, {
  magic: u64('magic', 0, BE),
  optionMagic: u64('option magic', 8, BE),
  handshakeFlags: u16('handshake flags', 16, BE),
})

/** Client flags: 32 bits sent after the greeting. */
export const CLIENT_FLAGS = layout(4, {
  flags: u32('client flags', 0, BE),
})

/** Option header: IHAVEOPT (0..8), option (8..12), data length (12..16); data follows. */
export const OPTION_HEADER = layout(16, {
  magic: u64('option magic', 0, BE),
  option: u32('option', 8, BE),
  length: u32('option length', 12, BE),
})

/** Option reply header: magic (0..8), option (8..12), reply type (12..16), length (16..20). */
export const OPTION_REPLY_HEADER = layout(20, {
  magic: u64('reply magic', 0, BE),
  option: u32('option', 8, BE),
  type: u32('reply type', 12, BE),
  length: u32('reply length', 16, BE),
})

/** NBD_OPT_EXPORT_NAME reply: size (0..8), transmission flags (8..10), then 124 zeros. */
export const EXPORT_NAME_REPLY = layout(10, {
  size: u64('export size', 0, BE),
  flags: u16('transmission flags', 8, BE),
})

/** NBD_INFO_EXPORT payload: type (0..2), size (2..10), transmission flags (10..12). */
export const INFO_EXPORT = layout(12, {
  type: u16('info type', 0, BE),
  size: u64('export size', 2, BE),
  flags: u16('transmission flags', 10, BE),
})

/** NBD_INFO_BLOCK_SIZE payload: type (0..2), minimum (2..6), preferred (6..10), maximum (10..14). */
export const INFO_BLOCK_SIZE = layout(14, {
  type: u16('info type', 0, BE),
  minimum: u32('minimum block size', 2, BE),
  preferred: u32('preferred block size', 6, BE),
  maximum: u32('maximum block size', 10, BE),
})

/**
 * Request header: magic (0..4), command flags (4..6), type (6..8), handle (8..16), offset
 * (16..24), length (24..28); NBD_CMD_WRITE's data follows.
 */
export const REQUEST_HEADER = layout(28, {
  magic: u32('request magic', 0, BE),
  flags: u16('command flags', 4, BE),
  type: u16('command type', 6, BE),
  handle: bytes('handle', 8, 8),
  offsetHigh: u32('offset (high 32 bits)', 16, BE),
  offsetLow: u32('offset (low 32 bits)', 20, BE),
  length: u32('length', 24, BE),
})

/** Simple reply: magic (0..4), error (4..8), handle (8..16); read data follows on success. */
export const SIMPLE_REPLY = layout(16, {
  magic: u32('simple reply magic', 0, BE),
  error: u32('error', 4, BE),
  handle: bytes('handle', 8, 8),
})

/** Structured reply chunk: magic (0..4), flags (4..6), type (6..8), handle (8..16), length (16..20). */
export const CHUNK_HEADER = layout(20, {
  magic: u32('structured reply magic', 0, BE),
  flags: u16('reply flags', 4, BE),
  type: u16('chunk type', 6, BE),
  handle: bytes('handle', 8, 8),
  length: u32('payload length', 16, BE),
})

/** A decoded transmission request. `offset` is null when it does not fit in 2^53. */
export interface NbdRequest {
  magic: number
  flags: number
  type: number
  handle: Buffer
  offset: number | null
  length: number
}

/** Decode a 28-byte request header (the handle is copied, so the input may be reused). */
export function decodeRequest(header: Uint8Array): NbdRequest {
  const f = REQUEST_HEADER.fields
  const high = f.offsetHigh.get(header)
  const low = f.offsetLow.get(header)
  return {
    magic: f.magic.get(header),
    flags: f.flags.get(header),
    type: f.type.get(header),
    handle: Buffer.from(f.handle.get(header)),
    // 2^53 = 2^21 * 2^32: a high word of 2^21 or more cannot be a safe integer.
    offset: high >= 2 ** 21 ? null : high * 2 ** 32 + low,
    length: f.length.get(header),
  }
}

/** Encode a request header (used by test clients). */
export function encodeRequest(request: {
  flags: number
  type: number
  handle: Uint8Array
  offset: number
  length: number
}): Buffer {
  const buffer = Buffer.alloc(REQUEST_HEADER.length)
  const f = REQUEST_HEADER.fields
  f.magic.put(buffer, REQUEST_MAGIC)
  f.flags.put(buffer, request.flags)
  f.type.put(buffer, request.type)
  f.handle.put(buffer, request.handle)
  f.offsetHigh.put(buffer, Math.floor(request.offset / 2 ** 32))
  f.offsetLow.put(buffer, request.offset % 2 ** 32)
  f.length.put(buffer, request.length)
  return buffer
}

/** The greeting the server sends on connect. */
export function encodeGreeting(handshakeFlags: number): Buffer {
  const buffer = Buffer.alloc(GREETING.length)
  GREETING.fields.magic.put(buffer, NBD_MAGIC)
  GREETING.fields.optionMagic.put(buffer, IHAVEOPT_MAGIC)
  GREETING.fields.handshakeFlags.put(buffer, handshakeFlags)
  return buffer
}

/** One option reply (header and data) as one buffer. */
export function encodeOptionReply(option: number, type: number, data: Uint8Array = EMPTY): Buffer {
  const buffer = Buffer.alloc(OPTION_REPLY_HEADER.length + data.length)
  const f = OPTION_REPLY_HEADER.fields
  f.magic.put(buffer, OPTION_REPLY_MAGIC)
  f.option.put(buffer, option)
  f.type.put(buffer, type)
  f.length.put(buffer, data.length)
  buffer.set(data, OPTION_REPLY_HEADER.length)
  return buffer
}

/** An option error reply whose data is a message for people (truncated to the string limit). */
export function encodeOptionError(option: number, type: number, message: string): Buffer {
  return encodeOptionReply(option, type, truncateUtf8(message, MAX_STRING_BYTES))
}

/** NBD_REP_SERVER data: name length, name, then an optional description. */
export function encodeServerReply(name: string, description: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8')
  const descriptionBytes = truncateUtf8(description, MAX_STRING_BYTES)
  const data = Buffer.alloc(4 + nameBytes.length + descriptionBytes.length)
  data.writeUInt32BE(nameBytes.length, 0)
  nameBytes.copy(data, 4)
  descriptionBytes.copy(data, 4 + nameBytes.length)
  return data
}

/** NBD_INFO_EXPORT data. */
export function encodeInfoExport(size: number, flags: number): Buffer {
  const data = Buffer.alloc(INFO_EXPORT.length)
  INFO_EXPORT.fields.type.put(data, INFO.EXPORT)
  INFO_EXPORT.fields.size.put(data, BigInt(size))
  INFO_EXPORT.fields.flags.put(data, flags)
  return data
}

/** NBD_INFO_NAME or NBD_INFO_DESCRIPTION data: type then the string. */
export function encodeInfoString(type: number, text: string): Buffer {
  const textBytes = truncateUtf8(text, MAX_STRING_BYTES)
  const data = Buffer.alloc(2 + textBytes.length)
  data.writeUInt16BE(type, 0)
  textBytes.copy(data, 2)
  return data
}

/** NBD_INFO_BLOCK_SIZE data. */
export function encodeInfoBlockSize(minimum: number, preferred: number, maximum: number): Buffer {
  const data = Buffer.alloc(INFO_BLOCK_SIZE.length)
  const f = INFO_BLOCK_SIZE.fields
  f.type.put(data, INFO.BLOCK_SIZE)
  f.minimum.put(data, minimum)
  f.preferred.put(data, preferred)
  f.maximum.put(data, maximum)
  return data
}

/** NBD_REP_META_CONTEXT data: context id then name. */
export function encodeMetaContext(id: number, name: string): Buffer {
  const nameBytes = Buffer.from(name, 'utf8')
  const data = Buffer.alloc(4 + nameBytes.length)
  data.writeUInt32BE(id, 0)
  nameBytes.copy(data, 4)
  return data
}

/** The reply that ends NBD_OPT_EXPORT_NAME: size, flags and (unless NO_ZEROES) 124 zeros. */
export function encodeExportNameReply(size: number, flags: number, noZeroes: boolean): Buffer {
  const buffer = Buffer.alloc(EXPORT_NAME_REPLY.length + (noZeroes ? 0 : EXPORT_NAME_PADDING))
  EXPORT_NAME_REPLY.fields.size.put(buffer, BigInt(size))
  EXPORT_NAME_REPLY.fields.flags.put(buffer, flags)
  return buffer
}

/** Write a simple reply header at the start of `target` (read data, if any, follows it). */
export function writeSimpleReplyHeader(target: Buffer, handle: Uint8Array, error: number): void {
  const f = SIMPLE_REPLY.fields
  f.magic.put(target, SIMPLE_REPLY_MAGIC)
  f.error.put(target, error)
  target.set(handle, 8)
}

/** A simple reply header (read data, if any, is sent after it). */
export function encodeSimpleReply(handle: Uint8Array, error: number): Buffer {
  const buffer = Buffer.allocUnsafe(SIMPLE_REPLY.length)
  writeSimpleReplyHeader(buffer, handle, error)
  return buffer
}

/**
 * A structured chunk header followed by `prefixLength` bytes of room for the start of the
 * payload (for example the offset of OFFSET_DATA); the caller fills the prefix.
 */
export function encodeChunkHeader(
  handle: Uint8Array,
  flags: number,
  type: number,
  payloadLength: number,
  prefixLength = 0,
): Buffer {
  const buffer = Buffer.allocUnsafe(CHUNK_HEADER.length + prefixLength)
  const f = CHUNK_HEADER.fields
  f.magic.put(buffer, STRUCTURED_REPLY_MAGIC)
  f.flags.put(buffer, flags)
  f.type.put(buffer, type)
  buffer.set(handle, 8)
  f.length.put(buffer, payloadLength)
  return buffer
}

/** Bytes before the data of an OFFSET_DATA chunk: the chunk header and the offset. */
export const DATA_CHUNK_PREFIX = CHUNK_HEADER.length + 8

/** Write the header and offset of an OFFSET_DATA chunk at the start of `target`. */
export function writeDataChunkHeader(
  target: Buffer,
  handle: Uint8Array,
  done: boolean,
  offset: number,
  dataLength: number,
): void {
  const f = CHUNK_HEADER.fields
  f.magic.put(target, STRUCTURED_REPLY_MAGIC)
  f.flags.put(target, done ? REPLY_FLAG.DONE : 0)
  f.type.put(target, CHUNK.OFFSET_DATA)
  target.set(handle, 8)
  f.length.put(target, 8 + dataLength)
  writeU64(target, CHUNK_HEADER.length, offset)
}

/** The header and offset of an OFFSET_DATA chunk carrying `dataLength` bytes at `offset`. */
export function encodeDataChunkHeader(
  handle: Uint8Array,
  done: boolean,
  offset: number,
  dataLength: number,
): Buffer {
  const buffer = Buffer.allocUnsafe(DATA_CHUNK_PREFIX)
  writeDataChunkHeader(buffer, handle, done, offset, dataLength)
  return buffer
}

/** A whole OFFSET_HOLE chunk. */
export function encodeHoleChunk(
  handle: Uint8Array,
  done: boolean,
  offset: number,
  length: number,
): Buffer {
  const buffer = encodeChunkHeader(handle, done ? REPLY_FLAG.DONE : 0, CHUNK.OFFSET_HOLE, 12, 12)
  writeU64(buffer, CHUNK_HEADER.length, offset)
  buffer.writeUInt32BE(length, CHUNK_HEADER.length + 8)
  return buffer
}

/** A whole NONE chunk (always final). */
export function encodeNoneChunk(handle: Uint8Array): Buffer {
  return encodeChunkHeader(handle, REPLY_FLAG.DONE, CHUNK.NONE, 0)
}

/** A whole, final ERROR chunk with a message for people. */
export function encodeErrorChunk(handle: Uint8Array, error: number, message: string): Buffer {
  const text = truncateUtf8(message, MAX_STRING_BYTES)
  const buffer = encodeChunkHeader(
    handle,
    REPLY_FLAG.DONE,
    CHUNK.ERROR,
    6 + text.length,
    6 + text.length,
  )
  buffer.writeUInt32BE(error, CHUNK_HEADER.length)
  buffer.writeUInt16BE(text.length, CHUNK_HEADER.length + 4)
  text.copy(buffer, CHUNK_HEADER.length + 6)
  return buffer
}

/** A whole BLOCK_STATUS chunk for one context: (length, flags) descriptors. */
export function encodeBlockStatusChunk(
  handle: Uint8Array,
  done: boolean,
  contextId: number,
  descriptors: readonly { length: number; flags: number }[],
): Buffer {
  const payload = 4 + descriptors.length * 8
  const buffer = encodeChunkHeader(
    handle,
    done ? REPLY_FLAG.DONE : 0,
    CHUNK.BLOCK_STATUS,
    payload,
    payload,
  )
  let at = CHUNK_HEADER.length
  buffer.writeUInt32BE(contextId, at)
  at += 4
  for (const descriptor of descriptors) {
    buffer.writeUInt32BE(descriptor.length, at)
    buffer.writeUInt32BE(descriptor.flags, at + 4)
    at += 8
  }
  return buffer
}

/** Write a safe integer as a big-endian u64. */
export function writeU64(buffer: Buffer, at: number, value: number): void {
  buffer.writeUInt32BE(Math.floor(value / 2 ** 32), at)
  buffer.writeUInt32BE(value % 2 ** 32, at + 4)
}

const EMPTY = Buffer.alloc(0)

/** UTF-8 bytes of `text`, cut at `limit` bytes without splitting a character. */
export function truncateUtf8(text: string, limit: number): Buffer {
  const encoded = Buffer.from(text, 'utf8')
  if (encoded.length <= limit) return encoded
  let end = limit
  // Back up over continuation bytes (10xxxxxx) so the cut lands on a character boundary.
  while (end > 0 && ((encoded[end] ?? 0) & 0xc0) === 0x80) end--
  return encoded.subarray(0, end)
}

/** Human names of option types, for messages. */
export function optionName(option: number): string {
  const entry = Object.entries(OPTION).find(([, value]) => value === option)
  return entry ? `NBD_OPT_${entry[0]}` : `option ${option}`
}

/** Human names of command types, for messages. */
export function commandName(type: number): string {
  const entry = Object.entries(COMMAND).find(([, value]) => value === type)
  return entry ? `NBD_CMD_${entry[0]}` : `command ${type}`
}
