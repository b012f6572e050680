import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { BlockExtent } from '../engine/disk'
import { isEngineError } from '../engine/errors'
import { runLimited } from '../engine/extents'
import { zeroes } from '../engine/file'
import { decodeUtf8 } from '../engine/struct'
import type { ConnectionHost, ResolvedExport } from './export-types'
import {
  BASE_ALLOCATION,
  CLIENT_FLAG,
  CLIENT_FLAGS,
  COMMAND,
  COMMAND_FLAG,
  commandName,
  decodeRequest,
  encodeBlockStatusChunk,
  encodeDataChunkHeader,
  encodeErrorChunk,
  encodeExportNameReply,
  encodeGreeting,
  encodeHoleChunk,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContext,
  encodeNoneChunk,
  encodeOptionError,
  encodeOptionReply,
  encodeServerReply,
  encodeSimpleReply,
  DATA_CHUNK_PREFIX,
  HANDSHAKE_FLAG,
  IHAVEOPT_MAGIC,
  INFO,
  MAX_STRING_BYTES,
  NBD_ERROR,
  OPTION,
  OPTION_HEADER,
  optionName,
  REPLY,
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
import { StreamClosedError, StreamReader } from './reader'
import { startServerTls } from './tls'

/** Id of the one metadata context (base:allocation) a client can select. */
const ALLOCATION_CONTEXT_ID = 1
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
/** Query strings accepted in one meta context option. */
const MAX_QUERIES = 128

/** The client broke a rule that leaves no way to carry on: close the connection. */
class ProtocolViolation extends Error {}

/** A malformed option: reply NBD_REP_ERR_INVALID with this message. */
class InvalidOption extends Error {}

/** An error a request ends with: the NBD error value and a message for the client. */
class RequestError extends Error {
  constructor(
    readonly value: NbdErrorValue,
    message: string,
  ) {
    super(message)
  }
}

/** Bounds-checked reading of option data. */
class OptionCursor {
  private at = 0
  constructor(private readonly data: Buffer) {}

  get remaining(): number {
    return this.data.length - this.at
  }

  u16(): number {
    this.need(2, 'a 16-bit field')
    const value = this.data.readUInt16BE(this.at)
    this.at += 2
    return value
  }

  u32(): number {
    this.need(4, 'a 32-bit field')
    const value = this.data.readUInt32BE(this.at)
    this.at += 4
    return value
  }

  /** A string of `length` bytes: valid UTF-8, no NUL, at most 4096 bytes. */
  text(length: number, what: string): string {
    if (length > MAX_STRING_BYTES)
      throw new InvalidOption(`The ${what} is ${length} bytes; the limit is ${MAX_STRING_BYTES}.`)
    this.need(length, `the ${what}`)
    const value = decodeUtf8(this.data.subarray(this.at, this.at + length))
    this.at += length
    if (value === null || value.includes('\0'))
      throw new InvalidOption(`The ${what} is not valid UTF-8 text.`)
    return value
  }

  private need(length: number, what: string): void {
    if (this.remaining < length) {
      throw new InvalidOption(
        `The option data ends before ${what} (${this.remaining} bytes left, ${length} needed).`,
      )
    }
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

/** Metadata contexts selected by the last NBD_OPT_SET_META_CONTEXT, and for which export. */
interface MetaSelection {
  exportName: string
  allocation: boolean
}

/**
 * One client: the fixed newstyle handshake, then the transmission phase with pipelined
 * requests (replies may leave out of order; each reply's chunks are written in one go).
 */
export class NbdConnection {
  private socket: Socket | TLSSocket
  private reader: StreamReader
  private phase: 'handshake' | 'transmission' | 'closed' = 'handshake'
  private tlsActive = false
  private structured = false
  private meta: MetaSelection | null = null
  private noZeroes = false
  private inFlight = 0
  private inFlightBytes = 0
  private slotWaiter: (() => void) | null = null
  private flags = 0
  private idle: Promise<void> = Promise.resolve()
  private idleResolve: (() => void) | null = null
  private drainWaiter: Promise<void> | null = null
  private handshakeTimer: NodeJS.Timeout | null = null
  private stopReading = false

  constructor(
    private readonly host: ConnectionHost,
    socket: Socket,
    readonly id: number,
  ) {
    this.socket = socket
    this.reader = new StreamReader(socket)
    if ('setNoDelay' in socket && typeof socket.setNoDelay === 'function') socket.setNoDelay(true)
    socket.on('error', () => undefined)
  }

  /** Serve the client until it disconnects or the server closes the connection. */
  async run(): Promise<void> {
    this.handshakeTimer = setTimeout(() => {
      if (this.phase === 'handshake') {
        this.log(
          'warn',
          `the handshake took longer than ${this.host.limits.handshakeTimeoutMs} ms; closing`,
        )
        this.destroy()
      }
    }, this.host.limits.handshakeTimeoutMs)
    this.handshakeTimer.unref()
    try {
      const selected = await this.handshake()
      if (this.handshakeTimer) clearTimeout(this.handshakeTimer)
      if (selected) {
        this.flags = this.transmissionFlags(selected)
        this.phase = 'transmission'
        await this.transmission(selected)
      }
    } catch (error) {
      if (error instanceof ProtocolViolation)
        this.log('warn', `${error.message}; closing the connection`)
      else if (
        !(error instanceof StreamClosedError) &&
        !isDisconnect(error) &&
        this.phase !== 'closed'
      ) {
        this.log(
          'warn',
          `connection failed: ${error instanceof Error ? error.message : String(error)}`,
        )
      }
    } finally {
      if (this.handshakeTimer) clearTimeout(this.handshakeTimer)
      await this.waitIdle()
      this.close()
    }
  }

  /**
   * Stop the connection for a server shutdown: during the handshake it is closed at once; in
   * transmission no further request is read, in-flight requests finish and get their replies.
   */
  shutdown(): void {
    if (this.phase === 'handshake') {
      this.destroy()
      return
    }
    this.stopReading = true
    // Wake the request loop; run() then waits for the requests in flight and closes.
    this.reader.abort()
    const waiter = this.slotWaiter
    this.slotWaiter = null
    waiter?.()
  }

  private log(level: 'info' | 'warn' | 'error', message: string): void {
    this.host.log({ level, connection: this.id, message })
  }

  private destroy(): void {
    this.phase = 'closed'
    this.socket.destroy()
  }

  private close(): void {
    if (this.phase === 'closed') return
    this.phase = 'closed'
    const socket = this.socket
    socket.end(() => socket.destroy())
  }

  // ---- handshake ------------------------------------------------------------------------

  private async write(data: Buffer): Promise<void> {
    if (this.phase === 'closed') return
    if (!this.socket.write(data)) await this.drained()
  }

  /** Resolves when the socket drained its write buffer, or closed. */
  private drained(): Promise<void> {
    if (!this.drainWaiter) {
      const socket = this.socket
      this.drainWaiter = new Promise<void>((resolve) => {
        const done = (): void => {
          socket.off('drain', done)
          socket.off('close', done)
          this.drainWaiter = null
          resolve()
        }
        socket.on('drain', done)
        socket.on('close', done)
      })
    }
    return this.drainWaiter
  }

  private reply(option: number, type: number, data?: Uint8Array): Promise<void> {
    return this.write(encodeOptionReply(option, type, data))
  }

  private replyError(option: number, type: number, message: string): Promise<void> {
    return this.write(encodeOptionError(option, type, message))
  }

  /** Negotiate until the client picks an export (returned) or leaves (null). */
  private async handshake(): Promise<ResolvedExport | null> {
    await this.write(encodeGreeting(HANDSHAKE_FLAG.FIXED_NEWSTYLE | HANDSHAKE_FLAG.NO_ZEROES))
    const clientFlags = CLIENT_FLAGS.fields.flags.get(await this.reader.read(CLIENT_FLAGS.length))
    const known = CLIENT_FLAG.FIXED_NEWSTYLE | CLIENT_FLAG.NO_ZEROES
    if ((clientFlags & ~known) !== 0) {
      throw new ProtocolViolation(
        `the client sent unknown client flags 0x${clientFlags.toString(16)}`,
      )
    }
    const fixed = (clientFlags & CLIENT_FLAG.FIXED_NEWSTYLE) !== 0
    this.noZeroes = (clientFlags & CLIENT_FLAG.NO_ZEROES) !== 0
    if (this.host.tlsKeys && !fixed) {
      throw new ProtocolViolation('the client does not speak fixed newstyle, which TLS needs')
    }

    for (let count = 0; ; count++) {
      if (count >= this.host.limits.maxOptions) {
        throw new ProtocolViolation(
          `the client sent more than ${this.host.limits.maxOptions} options`,
        )
      }
      const header = await this.reader.read(OPTION_HEADER.length)
      const f = OPTION_HEADER.fields
      if (f.magic.get(header) !== IHAVEOPT_MAGIC)
        throw new ProtocolViolation('an option did not start with IHAVEOPT')
      const option = f.option.get(header)
      const length = f.length.get(header)
      if (length > this.host.limits.maxOptionData) {
        throw new ProtocolViolation(
          `${optionName(option)} carries ${length} bytes of data; the limit is ${this.host.limits.maxOptionData}`,
        )
      }
      const data = await this.reader.read(length)
      const selected = await this.option(option, data)
      if (selected === 'abort') return null
      if (selected) return selected
    }
  }

  /** Handle one option; returns the export to enter transmission with, 'abort', or null. */
  private async option(option: number, data: Buffer): Promise<ResolvedExport | 'abort' | null> {
    if (this.host.shuttingDown && option !== OPTION.ABORT) {
      if (option === OPTION.EXPORT_NAME) throw new ProtocolViolation('the server is shutting down')
      await this.replyError(option, REPLY.ERR_SHUTDOWN, 'The server is shutting down.')
      return null
    }
    if (
      this.host.tlsKeys &&
      !this.tlsActive &&
      option !== OPTION.STARTTLS &&
      option !== OPTION.ABORT
    ) {
      if (option === OPTION.EXPORT_NAME)
        throw new ProtocolViolation('NBD_OPT_EXPORT_NAME before TLS on a TLS-only server')
      await this.replyError(
        option,
        REPLY.ERR_TLS_REQD,
        'This server requires TLS: send NBD_OPT_STARTTLS first.',
      )
      return null
    }
    try {
      switch (option) {
        case OPTION.ABORT:
          await this.reply(option, REPLY.ACK)
          return 'abort'
        case OPTION.EXPORT_NAME:
          return await this.optionExportName(data)
        case OPTION.LIST:
          await this.optionList(data)
          return null
        case OPTION.STARTTLS:
          await this.optionStartTls(data)
          return null
        case OPTION.INFO:
        case OPTION.GO:
          return await this.optionInfo(option, data)
        case OPTION.STRUCTURED_REPLY:
          if (data.length !== 0) throw new InvalidOption('NBD_OPT_STRUCTURED_REPLY takes no data.')
          this.structured = true
          await this.reply(option, REPLY.ACK)
          return null
        case OPTION.LIST_META_CONTEXT:
        case OPTION.SET_META_CONTEXT:
          await this.optionMetaContext(option, data)
          return null
        default:
          await this.replyError(
            option,
            REPLY.ERR_UNSUP,
            `${optionName(option)} is not supported by this server.`,
          )
          return null
      }
    } catch (error) {
      if (error instanceof InvalidOption) {
        await this.replyError(option, REPLY.ERR_INVALID, error.message)
        return null
      }
      throw error
    }
  }

  private async optionExportName(data: Buffer): Promise<ResolvedExport> {
    const name = decodeUtf8(data)
    if (name === null || data.length > MAX_STRING_BYTES)
      throw new ProtocolViolation('NBD_OPT_EXPORT_NAME with an invalid name')
    let selected: ResolvedExport | null
    try {
      selected = await this.host.resolveExport(name)
    } catch (error) {
      throw new ProtocolViolation(
        `export '${name}' cannot be opened: ${error instanceof Error ? error.message : String(error)}`,
      )
    }
    if (!selected) throw new ProtocolViolation(`the client asked for the unknown export '${name}'`)
    await this.write(
      encodeExportNameReply(selected.disk.size, this.transmissionFlags(selected), this.noZeroes),
    )
    return selected
  }

  private async optionList(data: Buffer): Promise<void> {
    if (data.length !== 0) throw new InvalidOption('NBD_OPT_LIST takes no data.')
    for (const entry of this.host.listExports()) {
      await this.reply(OPTION.LIST, REPLY.SERVER, encodeServerReply(entry.name, entry.description))
    }
    await this.reply(OPTION.LIST, REPLY.ACK)
  }

  private async optionStartTls(data: Buffer): Promise<void> {
    const keys = this.host.tlsKeys
    if (!keys) {
      await this.replyError(
        OPTION.STARTTLS,
        REPLY.ERR_POLICY,
        'TLS is not configured on this server.',
      )
      return
    }
    if (data.length !== 0) throw new InvalidOption('NBD_OPT_STARTTLS takes no data.')
    if (this.tlsActive) throw new InvalidOption('TLS is already active.')
    await this.reply(OPTION.STARTTLS, REPLY.ACK)
    const leftover = this.reader.detach()
    let secure: TLSSocket
    try {
      secure = await startServerTls(this.socket as Socket, keys, leftover)
    } catch (error) {
      throw new ProtocolViolation(
        `the TLS handshake failed: ${(error instanceof Error ? error.message : String(error)).replace(/\.$/, '')}`,
      )
    }
    secure.on('error', () => undefined)
    this.socket = secure
    this.reader.attach(secure)
    this.tlsActive = true
    // proto.md: no negotiation state survives STARTTLS.
    this.structured = false
    this.meta = null
  }

  private async optionInfo(option: number, data: Buffer): Promise<ResolvedExport | null> {
    const cursor = new OptionCursor(data)
    const nameLength = cursor.u32()
    if (nameLength > data.length - 6)
      throw new InvalidOption(`The export name length ${nameLength} exceeds the option data.`)
    const name = cursor.text(nameLength, 'export name')
    const count = cursor.u16()
    if (cursor.remaining !== count * 2) {
      throw new InvalidOption(
        `${count} information requests need ${count * 2} bytes; ${cursor.remaining} were sent.`,
      )
    }
    const requests = new Set<number>()
    for (let index = 0; index < count; index++) requests.add(cursor.u16())

    let selected: ResolvedExport | null
    try {
      selected = await this.host.resolveExport(name)
    } catch (error) {
      await this.replyError(
        option,
        REPLY.ERR_UNKNOWN,
        `Export '${name}' is not available: ${error instanceof Error ? error.message : String(error)}`,
      )
      return null
    }
    if (!selected) {
      await this.replyError(option, REPLY.ERR_UNKNOWN, `There is no export named '${name}'.`)
      return null
    }
    await this.reply(
      option,
      REPLY.INFO,
      encodeInfoExport(selected.disk.size, this.transmissionFlags(selected)),
    )
    if (requests.has(INFO.NAME))
      await this.reply(option, REPLY.INFO, encodeInfoString(INFO.NAME, selected.name))
    if (requests.has(INFO.DESCRIPTION) && selected.description !== '') {
      await this.reply(option, REPLY.INFO, encodeInfoString(INFO.DESCRIPTION, selected.description))
    }
    // Always sent: the maximum is below the protocol default, so clients must learn it.
    await this.reply(
      option,
      REPLY.INFO,
      encodeInfoBlockSize(1, this.preferredBlockSize(selected), this.host.limits.maxBlockSize),
    )
    await this.reply(option, REPLY.ACK)
    return option === OPTION.GO ? selected : null
  }

  private async optionMetaContext(option: number, data: Buffer): Promise<void> {
    const setting = option === OPTION.SET_META_CONTEXT
    // proto.md: SET replaces the selection even when it fails.
    if (setting) this.meta = null
    if (!this.structured)
      throw new InvalidOption(`${optionName(option)} needs structured replies first.`)
    const cursor = new OptionCursor(data)
    const nameLength = cursor.u32()
    const name = cursor.text(nameLength, 'export name')
    const count = cursor.u32()
    if (count > MAX_QUERIES) {
      await this.replyError(
        option,
        REPLY.ERR_TOO_BIG,
        `${count} queries are more than the ${MAX_QUERIES} accepted.`,
      )
      return
    }
    const queries: string[] = []
    for (let index = 0; index < count; index++) queries.push(cursor.text(cursor.u32(), 'query'))
    if (cursor.remaining !== 0)
      throw new InvalidOption(`${cursor.remaining} bytes follow the last query.`)
    for (const query of queries) {
      if (!query.includes(':')) throw new InvalidOption(`The query '${query}' has no namespace.`)
    }
    let selected: ResolvedExport | null
    try {
      selected = await this.host.resolveExport(name)
    } catch (error) {
      await this.replyError(
        option,
        REPLY.ERR_UNKNOWN,
        `Export '${name}' is not available: ${error instanceof Error ? error.message : String(error)}`,
      )
      return
    }
    if (!selected) {
      await this.replyError(option, REPLY.ERR_UNKNOWN, `There is no export named '${name}'.`)
      return
    }
    const matches = setting
      ? queries.includes(BASE_ALLOCATION)
      : queries.length === 0 ||
        queries.some((query) => query === BASE_ALLOCATION || query === 'base:')
    if (matches)
      await this.reply(
        option,
        REPLY.META_CONTEXT,
        encodeMetaContext(setting ? ALLOCATION_CONTEXT_ID : 0, BASE_ALLOCATION),
      )
    if (setting) this.meta = { exportName: selected.name, allocation: matches }
    await this.reply(option, REPLY.ACK)
  }

  private preferredBlockSize(selected: ResolvedExport): number {
    const unit = selected.disk.allocationUnit
    let preferred = 4096
    while (preferred < unit && preferred < 2 * 1024 * 1024) preferred *= 2
    return Math.min(preferred, this.host.limits.maxBlockSize)
  }

  private canFastZero(selected: ResolvedExport): boolean {
    return !selected.readOnly && selected.disk.capabilities.blockStatus
  }

  /**
   * Transmission flags for an export. CAN_MULTI_CONN is set because every connection of this
   * server shares one Disk object: a flush on any connection flushes that object, which holds
   * every write any connection completed (README.md, "Multi-conn").
   */
  private transmissionFlags(selected: ResolvedExport): number {
    let flags =
      TRANSMISSION_FLAG.HAS_FLAGS | TRANSMISSION_FLAG.SEND_FLUSH | TRANSMISSION_FLAG.CAN_MULTI_CONN
    if (selected.readOnly) {
      flags |= TRANSMISSION_FLAG.READ_ONLY
    } else {
      flags |=
        TRANSMISSION_FLAG.SEND_FUA |
        TRANSMISSION_FLAG.SEND_TRIM |
        TRANSMISSION_FLAG.SEND_WRITE_ZEROES
      if (this.canFastZero(selected)) flags |= TRANSMISSION_FLAG.SEND_FAST_ZERO
    }
    if (this.structured) flags |= TRANSMISSION_FLAG.SEND_DF
    return flags
  }

  // ---- transmission ---------------------------------------------------------------------

  private async transmission(selected: ResolvedExport): Promise<void> {
    const limits = this.host.limits
    for (;;) {
      while (this.inFlight >= limits.maxInFlight || this.inFlightBytes >= limits.maxInFlightBytes) {
        await new Promise<void>((resolve) => (this.slotWaiter = resolve))
      }
      if (this.stopReading) return
      let header: Buffer
      try {
        header =
          this.reader.tryRead(REQUEST_HEADER.length) ??
          (await this.reader.read(REQUEST_HEADER.length))
      } catch (error) {
        if (error instanceof StreamClosedError && error.buffered > 0 && !this.stopReading) {
          this.log(
            'warn',
            `the client disconnected in the middle of a request header (${error.buffered} bytes)`,
          )
        }
        return
      }
      const request = decodeRequest(header)
      if (request.magic !== REQUEST_MAGIC) {
        throw new ProtocolViolation(
          `a request has the magic 0x${request.magic.toString(16)} instead of 0x${REQUEST_MAGIC.toString(16)}`,
        )
      }
      let payload: { data: Buffer; release: () => void } | null = null
      if (request.type === COMMAND.WRITE) {
        if (request.length > limits.maxBlockSize) {
          throw new ProtocolViolation(
            `a write of ${request.length} bytes exceeds the ${limits.maxBlockSize}-byte maximum block size`,
          )
        }
        try {
          payload = await this.reader.readPooled(request.length, this.host.pool)
        } catch (error) {
          if (error instanceof StreamClosedError) {
            this.log(
              'warn',
              `the client disconnected in the middle of a ${request.length}-byte write; it was not applied`,
            )
            return
          }
          throw error
        }
      }
      if (request.type === COMMAND.DISC) return
      this.track(selected, request, payload)
    }
  }

  private track(
    selected: ResolvedExport,
    request: NbdRequest,
    payload: { data: Buffer; release: () => void } | null,
  ): void {
    const cost =
      request.type === COMMAND.READ || request.type === COMMAND.WRITE
        ? Math.min(request.length, this.host.limits.maxBlockSize)
        : 0
    this.inFlight++
    this.inFlightBytes += cost
    if (this.inFlight === 1) this.idle = new Promise((resolve) => (this.idleResolve = resolve))
    void this.serveRequest(selected, request, payload, cost)
  }

  /** Handle one request and release its slot; never rejects. */
  private async serveRequest(
    selected: ResolvedExport,
    request: NbdRequest,
    payload: { data: Buffer; release: () => void } | null,
    cost: number,
  ): Promise<void> {
    try {
      await this.handle(selected, request, payload?.data ?? null)
    } catch (error) {
      this.log(
        'error',
        `internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
      )
    }
    payload?.release()
    this.inFlight--
    this.inFlightBytes -= cost
    const waiter = this.slotWaiter
    this.slotWaiter = null
    waiter?.()
    if (this.inFlight === 0) this.idleResolve?.()
  }

  private waitIdle(): Promise<void> {
    return this.inFlight === 0 ? Promise.resolve() : this.idle
  }

  /**
   * Write every buffer of one reply in one synchronous run, so no other reply interleaves;
   * `written` runs once the socket no longer needs the buffers.
   */
  private async send(buffers: Buffer[], written?: () => void): Promise<void> {
    const socket = this.socket
    if (this.phase === 'closed' || socket.destroyed) {
      written?.()
      return
    }
    const done = written ? (): void => written() : undefined
    if (buffers.length === 1) {
      socket.write(buffers[0]!, done)
    } else {
      socket.cork()
      const last = buffers.length - 1
      buffers.forEach((buffer, index) => socket.write(buffer, index === last ? done : undefined))
      socket.uncork()
    }
    if (socket.writableNeedDrain) await this.drained()
  }

  private async handle(
    selected: ResolvedExport,
    request: NbdRequest,
    payload: Buffer | null,
  ): Promise<void> {
    try {
      this.validate(selected, request)
      switch (request.type) {
        case COMMAND.READ:
          await this.commandRead(selected, request)
          return
        case COMMAND.BLOCK_STATUS:
          await this.commandBlockStatus(selected, request)
          return
        case COMMAND.WRITE:
          await selected.disk.write(request.offset!, payload!, {
            fua: (request.flags & COMMAND_FLAG.FUA) !== 0,
          })
          break
        case COMMAND.FLUSH:
          await selected.disk.flush()
          break
        case COMMAND.TRIM:
          await selected.disk.discard(request.offset!, request.length)
          if (request.flags & COMMAND_FLAG.FUA) await selected.disk.flush()
          break
        case COMMAND.WRITE_ZEROES:
          await this.commandWriteZeroes(selected, request)
          break
      }
      await this.send([encodeSimpleReply(request.handle, 0)])
    } catch (error) {
      const value = nbdErrorOf(error)
      const message = error instanceof Error ? error.message : String(error)
      if (!(error instanceof RequestError)) {
        this.log(
          'error',
          `${commandName(request.type)} of ${request.length} bytes at ${request.offset} failed: ${message}`,
        )
      }
      await this.sendError(request, value, message)
    }
  }

  private sendError(request: NbdRequest, value: NbdErrorValue, message: string): Promise<void> {
    if (this.structured) return this.send([encodeErrorChunk(request.handle, value, message)])
    return this.send([encodeSimpleReply(request.handle, value)])
  }

  /** Flags, bounds and permissions of a request; throws the RequestError to reply with. */
  private validate(selected: ResolvedExport, request: NbdRequest): void {
    const flags = this.flags
    let allowed = flags & TRANSMISSION_FLAG.SEND_FUA ? COMMAND_FLAG.FUA : 0
    let writes = false
    switch (request.type) {
      case COMMAND.READ:
        if (this.structured) allowed |= COMMAND_FLAG.DF
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
        return this.checkFlags(request, allowed)
      case COMMAND.BLOCK_STATUS:
        allowed |= COMMAND_FLAG.REQ_ONE
        if (!this.structured || !this.meta?.allocation || this.meta.exportName !== selected.name) {
          throw new RequestError(
            NBD_ERROR.EINVAL,
            'NBD_CMD_BLOCK_STATUS needs the base:allocation context selected for this export.',
          )
        }
        break
      default:
        throw new RequestError(NBD_ERROR.EINVAL, `${commandName(request.type)} is not supported.`)
    }
    this.checkFlags(request, allowed)
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
    if (request.type === COMMAND.READ && request.length > this.host.limits.maxBlockSize) {
      throw new RequestError(
        NBD_ERROR.EINVAL,
        `A read of ${request.length} bytes exceeds the ${this.host.limits.maxBlockSize}-byte maximum block size.`,
      )
    }
  }

  private checkFlags(request: NbdRequest, allowed: number): void {
    const extra = request.flags & ~allowed
    if (extra !== 0)
      throw new RequestError(
        NBD_ERROR.EINVAL,
        `${commandName(request.type)} does not accept the command flags 0x${extra.toString(16)}.`,
      )
  }

  /**
   * NBD_CMD_READ. The common case (one data range) is read straight into a pooled buffer behind
   * room for the reply header, and leaves in one socket write; ranges with holes of at least
   * MIN_HOLE bytes become several chunks, the holes without data.
   */
  private async commandRead(selected: ResolvedExport, request: NbdRequest): Promise<void> {
    const offset = request.offset!
    const length = request.length
    if (this.structured && length === 0) {
      await this.send([encodeNoneChunk(request.handle)])
      return
    }
    const detectHoles =
      this.structured &&
      (request.flags & COMMAND_FLAG.DF) === 0 &&
      length >= HOLE_DETECTION_MIN &&
      selected.disk.capabilities.blockStatus
    const segments = detectHoles
      ? toSegments(await selected.disk.blockStatus(offset, length), offset)
      : null
    const single = segments === null || (segments.length === 1 && !segments[0]!.hole)
    const prefix = !this.structured ? SIMPLE_REPLY.length : single ? DATA_CHUNK_PREFIX : 0
    const pool = this.host.pool
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
        if (this.structured) writeDataChunkHeader(frame, request.handle, true, offset, length)
        else writeSimpleReplyHeader(frame, request.handle, 0)
        handedOver = true
        await this.send([frame.subarray(0, prefix + length)], release)
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
      await this.send(buffers, release)
    } finally {
      if (!handedOver) release()
    }
  }

  private async commandBlockStatus(selected: ResolvedExport, request: NbdRequest): Promise<void> {
    if (request.length === 0)
      throw new RequestError(NBD_ERROR.EINVAL, 'NBD_CMD_BLOCK_STATUS of 0 bytes.')
    const extents = await selected.disk.blockStatus(request.offset!, request.length)
    const descriptors: { length: number; flags: number }[] = []
    for (const extent of extents) {
      const flags = (extent.present ? 0 : STATE.HOLE) | (extent.zero ? STATE.ZERO : 0)
      const last = descriptors[descriptors.length - 1]
      if (last && last.flags === flags) last.length += extent.length
      else descriptors.push({ length: extent.length, flags })
    }
    const limit = request.flags & COMMAND_FLAG.REQ_ONE ? 1 : MAX_DESCRIPTORS
    await this.send([
      encodeBlockStatusChunk(
        request.handle,
        true,
        ALLOCATION_CONTEXT_ID,
        descriptors.slice(0, limit),
      ),
    ])
  }

  private async commandWriteZeroes(selected: ResolvedExport, request: NbdRequest): Promise<void> {
    const disk = selected.disk
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

/** Whether `error` only says that the peer went away. */
function isDisconnect(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code
  return (
    code === 'EPIPE' ||
    code === 'ECONNRESET' ||
    code === 'ERR_STREAM_DESTROYED' ||
    code === 'ERR_STREAM_WRITE_AFTER_END'
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
