import { zeroes } from '../engine/file'
import { nbdErrorOf, ProtocolViolation, RequestError } from './errors'
import type { ConnectionHost } from './export-types'
import { ALLOCATION_CONTEXT_ID, type Negotiated } from './handshake'
import {
  COMMAND,
  COMMAND_FLAG,
  commandName,
  decodeRequest,
  encodeBlockStatusChunk,
  encodeErrorChunk,
  encodeSimpleReply,
  NBD_ERROR,
  REQUEST_HEADER,
  REQUEST_MAGIC,
  STATE,
  TRANSMISSION_FLAG,
  type NbdErrorValue,
  type NbdRequest,
} from './protocol'
import { answerRead, READ_PIECE } from './read-reply'
import { StreamClosedError, type StreamReader } from './reader'

/**
 * The transmission phase of proto.md ("Transmission phase", "Request types"): reading requests
 * off the wire, validating them against what the handshake advertised, running the commands on
 * the export's disk and encoding their replies (simple, or structured chunks). Flow control,
 * the socket and shutdown stay with the connection.
 */

/** Block status descriptors sent at most in one reply (clients ask again for the rest). */
const MAX_DESCRIPTORS = 65536
/** Bytes of zeroes written per request for WRITE_ZEROES with NO_HOLE. */
const ZERO_WRITE_CHUNK = 1024 * 1024

/** How a reply's bytes are accounted for (see {@link TransmissionChannel.send}). */
export interface SendOptions {
  /** Bytes of these buffers already reserved (a read's buffer); the rest is charged now. */
  reserved?: number
  /** Runs once the socket no longer needs the buffers (written, or the client is gone). */
  written?: () => void
  /**
   * Runs (before `written`) when a {@link FilePart} of the reply could not be read: its bytes
   * went out as zeros, and the reply must end with an error. `code` is the errno's name.
   */
  failed?: (code: string) => void
}

/**
 * Bytes of a plain file, sent from the page cache to the socket without passing through this
 * process (sendfile); `fd` -1 is that many zero bytes. Only where the channel says `zeroCopy`.
 */
export interface FilePart {
  fd: number
  position: number
  length: number
}

/** One part of a reply: bytes in memory, or a {@link FilePart}. */
export type ReplyPart = Buffer | FilePart

/** What transmission needs from its connection: the socket, and flow control. */
export interface TransmissionChannel {
  readonly host: ConnectionHost
  /**
   * Queue every buffer of one reply (or one piece of it) in one synchronous run, so that no
   * other reply comes between them. Their bytes count against the connection until written.
   */
  send(buffers: ReplyPart[], options?: SendOptions): Promise<void>
  /** Whether replies may hold {@link FilePart}s: a plain (not TLS) socket and the addon's sendfile. */
  readonly zeroCopy: boolean
  /** Run `body` with the socket to itself: no other reply is sent until it ends. */
  exclusive(
    body: (send: (buffers: Buffer[], options?: SendOptions) => void) => Promise<void>,
  ): Promise<void>
  /** Resolves once `ready()` holds (true), or false when the client is gone. */
  until(ready: () => boolean): Promise<boolean>
  /** Wait for room below the connection's share and reserve `bytes` (false: client gone). */
  acquire(bytes: number): Promise<boolean>
  reserve(bytes: number): void
  release(bytes: number): void
  log(level: 'info' | 'warn' | 'error', message: string): void
  /** Cut the connection (a reply that cannot be finished). */
  hangUp(message: string): void
}

/** A write's payload, and how to give its buffer back. */
export interface Payload {
  data: Buffer
  release: () => void
}

/** A request read off the wire, with what it holds until it is served. */
export interface Incoming {
  request: NbdRequest
  payload: Payload | null
  /**
   * Bytes reserved for it when it was read (a write's payload, a read's first piece): the
   * connection releases what is left of them once the request is served.
   */
  reserved: number
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
  async next(reader: StreamReader, stopping: () => boolean): Promise<Incoming | null> {
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
    if (request.type === COMMAND.DISC) return null
    if (request.type !== COMMAND.WRITE) {
      // A read's first piece is reserved now, so that requests read meanwhile see it.
      const first = request.type === COMMAND.READ ? Math.min(request.length, READ_PIECE) : 0
      this.channel.reserve(first)
      return { request, payload: null, reserved: first }
    }
    if (request.length > limits.maxBlockSize) {
      throw new ProtocolViolation(
        `a write of ${request.length} bytes exceeds the ${limits.maxBlockSize}-byte maximum block size`,
      )
    }
    this.channel.reserve(request.length)
    try {
      const payload = await reader.readPooled(request.length, this.channel.host.pool)
      return { request, payload, reserved: request.length }
    } catch (error) {
      this.channel.release(request.length)
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

  /** Validate and run one request, and send its reply (an error reply if it fails). */
  async serve(incoming: Incoming): Promise<void> {
    const { request, payload } = incoming
    const disk = this.negotiated.export.disk
    try {
      this.validate(request)
      switch (request.type) {
        case COMMAND.READ:
          await answerRead(this.channel, this.negotiated, incoming)
          return
        case COMMAND.BLOCK_STATUS:
          await this.commandBlockStatus(request)
          return
        case COMMAND.WRITE:
          await disk.write(request.offset!, payload!.data, {
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
