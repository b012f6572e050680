import type { BlockExtent } from '../engine/disk'
import { runLimited } from '../engine/extents'
import { zeroes } from '../engine/file'
import { nbdErrorOf } from './errors'
import type { Negotiated } from './handshake'
import {
  COMMAND_FLAG,
  DATA_CHUNK_PREFIX,
  encodeDataChunkHeader,
  encodeErrorChunk,
  encodeHoleChunk,
  encodeNoneChunk,
  SIMPLE_REPLY,
  writeDataChunkHeader,
  writeSimpleReplyHeader,
} from './protocol'
import type { Incoming, SendOptions, TransmissionChannel } from './transmission'

/**
 * The reply to NBD_CMD_READ (proto.md, "NBD_CMD_READ"), produced in pieces of at most
 * READ_PIECE bytes so that a read of any size pins at most a piece or two of memory while its
 * client is slow to take it:
 * - with structured replies, each piece is its own data (and hole) chunks, sent when the
 *   connection has room; chunks of other replies may go between them, as proto.md allows;
 * - a simple reply, or one data chunk (NBD_CMD_FLAG_DF), is one header followed by the data:
 *   the pieces go out back to back with the socket held for this reply alone, a piece read
 *   while the previous one is being sent.
 */

/** Bytes of a read reply produced at a time (and reserved when its request is read). */
export const READ_PIECE = 1024 * 1024
/** Zero ranges shorter than this are sent as data, not as a hole chunk. */
const MIN_HOLE = 4096
/**
 * Reads shorter than this are sent as one data chunk without asking for block status: a hole
 * saves little on the wire there, and unallocated clusters cost no I/O to read anyway.
 */
const HOLE_DETECTION_MIN = 64 * 1024

/** Answer a validated NBD_CMD_READ. Returns early, sending nothing more, if the client left. */
export async function answerRead(
  channel: TransmissionChannel,
  negotiated: Negotiated,
  incoming: Incoming,
): Promise<void> {
  const { request } = incoming
  const offset = request.offset!
  const end = offset + request.length
  if (negotiated.structured && request.length === 0) {
    await channel.send([encodeNoneChunk(request.handle)])
    return
  }
  const oneFrame = !negotiated.structured || (request.flags & COMMAND_FLAG.DF) !== 0
  if (oneFrame && request.length > READ_PIECE) {
    await channel.exclusive((send) => streamFrame(channel, negotiated, incoming, send))
    return
  }
  // At least one piece: a simple reply to a read of 0 bytes is its header alone.
  let at = offset
  do {
    const length = Math.min(READ_PIECE, end - at)
    let reserved = incoming.reserved
    incoming.reserved = 0
    if (at > offset) {
      if (!(await channel.acquire(length))) return
      reserved = length
    }
    await sendPiece(channel, negotiated, incoming, at, length, at + length >= end, reserved)
    at += length
  } while (at < end)
}

/**
 * Read [at, at + length) and send it: as one buffer (reply header, then the data read straight
 * behind it) when it is one data range; ranges that read as zeros for at least MIN_HOLE bytes
 * become hole chunks. `reserved` bytes were charged for it; they go with the send, or back.
 */
async function sendPiece(
  channel: TransmissionChannel,
  negotiated: Negotiated,
  incoming: Incoming,
  at: number,
  length: number,
  last: boolean,
  reserved: number,
): Promise<void> {
  const { structured, export: selected } = negotiated
  const { request } = incoming
  const disk = selected.disk
  const pool = channel.host.pool
  let frame: Buffer | null = null
  try {
    const detectHoles =
      structured &&
      (request.flags & COMMAND_FLAG.DF) === 0 &&
      length >= HOLE_DETECTION_MIN &&
      disk.capabilities.blockStatus
    const segments = detectHoles ? toSegments(await disk.blockStatus(at, length), at) : null
    const single = segments === null || (segments.length === 1 && !segments[0]!.hole)
    const prefix = !structured ? SIMPLE_REPLY.length : single ? DATA_CHUNK_PREFIX : 0
    frame = pool.take(prefix + length)
    const data = frame.subarray(prefix, prefix + length)
    if (single) {
      await disk.readInto(data, at)
    } else {
      const tasks: (() => Promise<void>)[] = []
      for (const segment of segments) {
        if (segment.hole) continue
        const part = data.subarray(segment.start - at, segment.end - at)
        tasks.push(() => disk.readInto(part, segment.start))
      }
      if (tasks.length > 0) await runLimited(tasks, 8)
    }
    const taken = frame
    const options: SendOptions = { reserved, written: () => pool.give(taken) }
    frame = null
    reserved = 0
    if (single) {
      if (structured) writeDataChunkHeader(taken, request.handle, last, at, length)
      else writeSimpleReplyHeader(taken, request.handle, 0)
      await channel.send([taken.subarray(0, prefix + length)], options)
      return
    }
    const buffers: Buffer[] = []
    segments.forEach((segment, index) => {
      const done = last && index === segments.length - 1
      const size = segment.end - segment.start
      if (segment.hole) {
        buffers.push(encodeHoleChunk(request.handle, done, segment.start, size))
      } else {
        buffers.push(encodeDataChunkHeader(request.handle, done, segment.start, size))
        buffers.push(data.subarray(segment.start - at, segment.end - at))
      }
    })
    await channel.send(buffers, options)
  } finally {
    if (frame) pool.give(frame)
    if (reserved > 0) channel.release(reserved)
  }
}

/**
 * A reply that is one frame (simple reply, or one data chunk) bigger than a piece, with the
 * socket to itself. The first piece is read before the header goes out, so a failure there is
 * an ordinary error reply. A later failure cannot be told in a simple reply: the connection is
 * cut, as proto.md requires; a data chunk is finished with zeros and followed by an error chunk.
 */
async function streamFrame(
  channel: TransmissionChannel,
  negotiated: Negotiated,
  incoming: Incoming,
  send: (buffers: Buffer[], options?: SendOptions) => void,
): Promise<void> {
  const { structured, export: selected } = negotiated
  const { request } = incoming
  const offset = request.offset!
  const end = offset + request.length
  const pool = channel.host.pool
  let unwritten = 0
  for (let at = offset; at < end; at += READ_PIECE) {
    const length = Math.min(READ_PIECE, end - at)
    const first = at === offset
    let reserved = incoming.reserved
    incoming.reserved = 0
    if (!first) {
      // One piece on the wire while the next is read: the client's pace sets ours.
      if (!(await channel.until(() => unwritten < 2))) return
      channel.reserve(length)
      reserved = length
    }
    const prefix = first ? (structured ? DATA_CHUNK_PREFIX : SIMPLE_REPLY.length) : 0
    const buffer = pool.take(prefix + length)
    try {
      await selected.disk.readInto(buffer.subarray(prefix, prefix + length), at)
    } catch (error) {
      pool.give(buffer)
      channel.release(reserved)
      if (first) throw error
      const message = error instanceof Error ? error.message : String(error)
      if (!structured) {
        channel.hangUp(
          `a read of ${request.length} bytes at ${offset} failed after its reply started: ${message}`,
        )
        return
      }
      channel.log(
        'error',
        `a read of ${request.length} bytes at ${offset} failed at ${at}: ${message}`,
      )
      for (let pad = at; pad < end; pad += READ_PIECE) {
        if (!(await channel.until(() => unwritten < 2))) return
        unwritten++
        send([zeroes(Math.min(READ_PIECE, end - pad))], { written: () => unwritten-- })
      }
      send([encodeErrorChunk(request.handle, nbdErrorOf(error), message)])
      return
    }
    if (first && structured)
      writeDataChunkHeader(buffer, request.handle, false, offset, request.length)
    else if (first) writeSimpleReplyHeader(buffer, request.handle, 0)
    unwritten++
    send([buffer.subarray(0, prefix + length)], {
      reserved,
      written: () => {
        unwritten--
        pool.give(buffer)
      },
    })
  }
  if (structured) send([encodeNoneChunk(request.handle)])
}

/** A piece of a read reply: data to send, or a hole that reads as zeros. */
interface Segment {
  start: number
  end: number
  hole: boolean
}

/** Turn block status extents into read segments: zero ranges of at least MIN_HOLE bytes become holes. */
function toSegments(extents: BlockExtent[], offset: number): Segment[] {
  const segments: Segment[] = []
  let cursor = offset
  for (const extent of extents) {
    const start = Math.max(extent.offset, cursor)
    const end = extent.offset + extent.length
    if (end <= start) continue
    const hole = extent.zero && end - start >= MIN_HOLE
    const last = segments[segments.length - 1]
    if (last && last.hole === hole && last.end === start) last.end = end
    else segments.push({ start, end, hole })
    cursor = end
  }
  return segments
}
