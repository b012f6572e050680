import type { BlockExtent } from '../engine/disk'
import { isEngineError } from '../engine/errors'
import { runLimited } from '../engine/extents'
import { zeroes } from '../engine/file'
import { ProtocolViolation } from './errors'
import type { ConnectionHost } from './export-types'
import { ALLOCATION_CONTEXT_ID, type Negotiated } from './handshake'
import {
  COMMAND,
  COMMAND_FLAG,
  commandName,
  DATA_CHUNK_PREFIX,
  decodeRequest,
  encodeBlockStatusChunk,
  encodeDataChunkHeader,
  encodeErrorChunk,
  encodeHoleChunk,
  encodeNoneChunk,
  encodeSimpleReply,
  NBD_ERROR,
  REQUEST_HEADER,
  REQUEST_MAGIC,
  SIMPLE_REPLY,
  STATE,
  TRANSMISSION_FLAG,
  type NbdErrorValue,
  type NbdRequest,
  writeDataChunkHeader,
  writeSimpleReplyHeader,
} from './protocol'
import { StreamClosedError, type StreamReader } from './reader'

/**
 * The transmission phase of proto.md ("Transmission phase", "Request types"): reading requests
 * off the wire, validating them against what the handshake advertised, running the commands on
 * the export's disk and encoding their replies (simple, or structured chunks). Flow control,
 * the socket and shutdown stay with the connection.
 */

/** Zero ranges shorter than this are sent as data, not as a hole chunk. */
const MIN_HOLE = 4096
/**
 * Reads shorter than this are sent as one data chunk without asking for block status: a hole
 * saves little on the wire there, and unallocated clusters cost no I/O to read anyway.
 */
const HOLE_DETECTION_MIN = 64 * 1024
/** Block status descriptors sent at most in one reply (clients ask again for the rest). */
const MAX_DESCRIPTORS = 65536
/** Bytes of zeroes written per request for WRITE_ZEROES with NO_HOLE. */
const ZERO_WRITE_CHUNK = 1024 * 1024

/** What transmission needs from its connection. */
export interface TransmissionChannel {
  readonly host: ConnectionHost
  /**
   * Write every buffer of one reply in one synchronous run, so no other reply interleaves;
   * `written` runs once the socket no longer needs the buffers.
   */
  send(buffers: Buffer[], written?: () => void): Promise<void>
  log(level: 'info' | 'warn' | 'error', message: string): void
}

/** A write's payload, and how to give its buffer back. */
export interface Payload {
  data: Buffer
  release: () => void
}

/** An error a request ends with: the NBD error value and a message for the client. */
class RequestError extends Error {
  constructor(
    readonly value: NbdErrorValue,
    message: string,
  ) {
    super(message)
  }
}

/** Map an engine failure to an NBD error value. */
export function nbdErrorOf(error: unknown): NbdErrorValue {
  if (error instanceof RequestError) return error.value
  if (!isEngineError(error)) return NBD_ERROR.EIO
  switch (error.code) {
    case 'READ_ONLY':
    case 'PERMISSION_DENIED':
      return NBD_ERROR.EPERM
    case 'OUT_OF_RANGE':
    case 'BAD_ARGUMENT':
    case 'BAD_REQUEST':
      return NBD_ERROR.EINVAL
    case 'SIZE_LIMIT':
      return NBD_ERROR.ENOSPC
    case 'NOT_CAPABLE':
      return NBD_ERROR.ENOTSUP
    default: {
      const errno = (error.cause as NodeJS.ErrnoException | undefined)?.code
      return errno === 'ENOSPC' || errno === 'EDQUOT' || errno === 'EFBIG'
        ? NBD_ERROR.ENOSPC
        : NBD_ERROR.EIO
    }
  }
}

/** Requests and replies of one connection that entered transmission. */
export class Transmission {
  constructor(
    private readonly channel: TransmissionChannel,
    private readonly negotiated: Negotiated,
  ) {}

  /**
   * The next request and a write's payload, or null when the client sent NBD_CMD_DISC or went
   * away (a write whose payload did not fully arrive is dropped). Throws ProtocolViolation on a
   * request that leaves no way to carry on.
   */
  async next(
    reader: StreamReader,
    stopping: () => boolean,
  ): Promise<{ request: NbdRequest; payload: Payload | null } | null> {
    const limits = this.channel.host.limits
    let header: Buffer
    try {
      header = reader.tryRead(REQUEST_HEADER.length) ?? (await reader.read(REQUEST_HEADER.length))
    } catch (error) {
      if (error instanceof StreamClosedError && error.buffered > 0 && !stopping()) {
        this.channel.log(
          'warn',
          `the client disconnected in the middle of a request header (${error.buffered} bytes)`,
        )
      }
      return null
    }
    const request = decodeRequest(header)
    if (request.magic !== REQUEST_MAGIC) {
      throw new ProtocolViolation(
        `a request has the magic 0x${request.magic.toString(16)} instead of 0x${REQUEST_MAGIC.toString(16)}`,
      )
    }
    let payload: Payload | null = null
    if (request.type === COMMAND.WRITE) {
      if (request.length > limits.maxBlockSize) {
        throw new ProtocolViolation(
          `a write of ${request.length} bytes exceeds the ${limits.maxBlockSize}-byte maximum block size`,
        )
      }
      try {
        payload = await reader.readPooled(request.length, this.channel.host.pool)
      } catch (error) {
        if (error instanceof StreamClosedError) {
          this.channel.log(
            'warn',
            `the client disconnected in the middle of a ${request.length}-byte write; it was not applied`,
          )
          return null
        }
        throw error
      }
    }
    if (request.type === COMMAND.DISC) return null
    return { request, payload }
  }

  /** Validate and run one request, and send its reply (an error reply if it fails). */
  async serve(request: NbdRequest, payload: Buffer | null): Promise<void> {
    const disk = this.negotiated.export.disk
    try {
      this.validate(request)
      switch (request.type) {
        case COMMAND.READ:
          await this.commandRead(request)
          return
        case COMMAND.BLOCK_STATUS:
          await this.commandBlockStatus(request)
          return
        case COMMAND.WRITE:
          await disk.write(request.offset!, payload!, {
            fua: (request.flags & COMMAND_FLAG.FUA) !== 0,
          })
          break
        case COMMAND.FLUSH:
          await disk.flush()
          break
        case COMMAND.TRIM:
          await disk.discard(request.offset!, request.length)
          if (request.flags & COMMAND_FLAG.FUA) await disk.flush()
          break
        case COMMAND.WRITE_ZEROES:
          await this.commandWriteZeroes(request)
          break
      }
      await this.channel.send([encodeSimpleReply(request.handle, 0)])
    } catch (error) {
      const value = nbdErrorOf(error)
      const message = error instanceof Error ? error.message : String(error)
      if (!(error instanceof RequestError)) {
        this.channel.log(
          'error',
          `${commandName(request.type)} of ${request.length} bytes at ${request.offset} failed: ${message}`,
        )
      }
      await this.sendError(request, value, message)
    }
  }

  private sendError(request: NbdRequest, value: NbdErrorValue, message: string): Promise<void> {
    if (this.negotiated.structured)
      return this.channel.send([encodeErrorChunk(request.handle, value, message)])
    return this.channel.send([encodeSimpleReply(request.handle, value)])
  }

  /** Flags, bounds and permissions of a request; throws the RequestError to reply with. */
  private validate(request: NbdRequest): void {
    const { flags, structured, meta, export: selected } = this.negotiated
    let allowed = flags & TRANSMISSION_FLAG.SEND_FUA ? COMMAND_FLAG.FUA : 0
    let writes = false
    switch (request.type) {
      case COMMAND.READ:
        if (structured) allowed |= COMMAND_FLAG.DF
        break
      case COMMAND.WRITE:
      case COMMAND.TRIM:
        writes = true
        break
      case COMMAND.WRITE_ZEROES:
        writes = true
        allowed |= COMMAND_FLAG.NO_HOLE
        if (flags & TRANSMISSION_FLAG.SEND_FAST_ZERO) allowed |= COMMAND_FLAG.FAST_ZERO
        break
      case COMMAND.FLUSH:
        if (request.offset !== 0 || request.length !== 0) {
          throw new RequestError(NBD_ERROR.EINVAL, 'NBD_CMD_FLUSH must have offset and length 0.')
        }
        return checkFlags(request, allowed)
      case COMMAND.BLOCK_STATUS:
        allowed |= COMMAND_FLAG.REQ_ONE
        if (!structured || !meta?.allocation || meta.exportName !== selected.name) {
          throw new RequestError(
            NBD_ERROR.EINVAL,
            'NBD_CMD_BLOCK_STATUS needs the base:allocation context selected for this export.',
          )
        }
        break
      default:
        throw new RequestError(NBD_ERROR.EINVAL, `${commandName(request.type)} is not supported.`)
    }
    checkFlags(request, allowed)
    if (writes && selected.readOnly)
      throw new RequestError(NBD_ERROR.EPERM, 'The export is read-only.')
    const size = selected.disk.size
    if (request.offset === null || request.offset + request.length > size) {
      const value =
        request.type === COMMAND.WRITE || request.type === COMMAND.WRITE_ZEROES
          ? NBD_ERROR.ENOSPC
          : NBD_ERROR.EINVAL
      throw new RequestError(
        value,
        `${commandName(request.type)} of ${request.length} bytes at offset ${request.offset ?? 'beyond 2^53'} is outside the ${size}-byte export.`,
      )
    }
    const maxBlockSize = this.channel.host.limits.maxBlockSize
    if (request.type === COMMAND.READ && request.length > maxBlockSize) {
      throw new RequestError(
        NBD_ERROR.EINVAL,
        `A read of ${request.length} bytes exceeds the ${maxBlockSize}-byte maximum block size.`,
      )
    }
  }

  /**
   * NBD_CMD_READ. The common case (one data range) is read straight into a pooled buffer behind
   * room for the reply header, and leaves in one socket write; ranges with holes of at least
   * MIN_HOLE bytes become several chunks, the holes without data.
   */
  private async commandRead(request: NbdRequest): Promise<void> {
    const { structured, export: selected } = this.negotiated
    const offset = request.offset!
    const length = request.length
    if (structured && length === 0) {
      await this.channel.send([encodeNoneChunk(request.handle)])
      return
    }
    const detectHoles =
      structured &&
      (request.flags & COMMAND_FLAG.DF) === 0 &&
      length >= HOLE_DETECTION_MIN &&
      selected.disk.capabilities.blockStatus
    const segments = detectHoles
      ? toSegments(await selected.disk.blockStatus(offset, length), offset)
      : null
    const single = segments === null || (segments.length === 1 && !segments[0]!.hole)
    const prefix = !structured ? SIMPLE_REPLY.length : single ? DATA_CHUNK_PREFIX : 0
    const pool = this.channel.host.pool
    const frame = pool.take(prefix + length)
    const release = (): void => pool.give(frame)
    let handedOver = false
    try {
      const data = frame.subarray(prefix, prefix + length)
      if (single) {
        await selected.disk.readInto(data, offset)
      } else {
        const tasks: (() => Promise<void>)[] = []
        for (const segment of segments) {
          if (segment.hole) continue
          const part = data.subarray(segment.start - offset, segment.end - offset)
          tasks.push(() => selected.disk.readInto(part, segment.start))
        }
        if (tasks.length > 0) await runLimited(tasks, 8)
      }
      if (single) {
        if (structured) writeDataChunkHeader(frame, request.handle, true, offset, length)
        else writeSimpleReplyHeader(frame, request.handle, 0)
        handedOver = true
        await this.channel.send([frame.subarray(0, prefix + length)], release)
        return
      }
      const buffers: Buffer[] = []
      segments.forEach((segment, index) => {
        const last = index === segments.length - 1
        if (segment.hole) {
          buffers.push(
            encodeHoleChunk(request.handle, last, segment.start, segment.end - segment.start),
          )
        } else {
          buffers.push(
            encodeDataChunkHeader(request.handle, last, segment.start, segment.end - segment.start),
          )
          buffers.push(data.subarray(segment.start - offset, segment.end - offset))
        }
      })
      handedOver = true
      await this.channel.send(buffers, release)
    } finally {
      if (!handedOver) release()
    }
  }

  private async commandBlockStatus(request: NbdRequest): Promise<void> {
    if (request.length === 0)
      throw new RequestError(NBD_ERROR.EINVAL, 'NBD_CMD_BLOCK_STATUS of 0 bytes.')
    const disk = this.negotiated.export.disk
    const extents = await disk.blockStatus(request.offset!, request.length)
    const descriptors: { length: number; flags: number }[] = []
    for (const extent of extents) {
      const flags = (extent.present ? 0 : STATE.HOLE) | (extent.zero ? STATE.ZERO : 0)
      const last = descriptors[descriptors.length - 1]
      if (last && last.flags === flags) last.length += extent.length
      else descriptors.push({ length: extent.length, flags })
    }
    const limit = request.flags & COMMAND_FLAG.REQ_ONE ? 1 : MAX_DESCRIPTORS
    await this.channel.send([
      encodeBlockStatusChunk(
        request.handle,
        true,
        ALLOCATION_CONTEXT_ID,
        descriptors.slice(0, limit),
      ),
    ])
  }

  private async commandWriteZeroes(request: NbdRequest): Promise<void> {
    const disk = this.negotiated.export.disk
    const offset = request.offset!
    const length = request.length
    const fua = (request.flags & COMMAND_FLAG.FUA) !== 0
    const noHole = (request.flags & COMMAND_FLAG.NO_HOLE) !== 0
    if (request.flags & COMMAND_FLAG.FAST_ZERO) {
      // Fast only when nothing has to be written: the range already reads as zeros.
      const zero =
        !noHole &&
        length > 0 &&
        (await disk.blockStatus(offset, length)).every((extent) => extent.zero)
      if (!zero)
        throw new RequestError(
          NBD_ERROR.ENOTSUP,
          'Zeroing this range is no faster than writing it.',
        )
      return
    }
    if (!noHole) {
      await disk.writeZeroes(offset, length, { fua })
      return
    }
    // NO_HOLE: the range must be provisioned, so zeros are written as data.
    for (let done = 0; done < length; done += ZERO_WRITE_CHUNK) {
      const piece = Math.min(ZERO_WRITE_CHUNK, length - done)
      await disk.write(offset + done, zeroes(piece))
    }
    if (fua) await disk.flush()
  }
}

function checkFlags(request: NbdRequest, allowed: number): void {
  const extra = request.flags & ~allowed
  if (extra !== 0)
    throw new RequestError(
      NBD_ERROR.EINVAL,
      `${commandName(request.type)} does not accept the command flags 0x${extra.toString(16)}.`,
    )
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
