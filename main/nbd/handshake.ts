import { quote } from '../engine/errors'
import { decodeUtf8 } from '../engine/struct'
import { ProtocolViolation } from './errors'
import type { ConnectionHost, ResolvedExport } from './export-types'
import {
  BASE_ALLOCATION,
  CLIENT_FLAG,
  CLIENT_FLAGS,
  encodeExportNameReply,
  encodeGreeting,
  encodeInfoBlockSize,
  encodeInfoExport,
  encodeInfoString,
  encodeMetaContext,
  encodeOptionError,
  encodeOptionReply,
  encodeServerReply,
  HANDSHAKE_FLAG,
  IHAVEOPT_MAGIC,
  INFO,
  MAX_STRING_BYTES,
  OPTION,
  OPTION_HEADER,
  optionName,
  REPLY,
  TRANSMISSION_FLAG,
} from './protocol'
import type { StreamReader } from './reader'
import type { TlsCredentials } from './tls'

/**
 * The handshake phase of proto.md ("Newstyle negotiation", "Option types"): the greeting, the
 * client flags, then options until the client picks an export. Nothing here touches the socket
 * directly: the connection lends its reader, a write that respects backpressure, and the TLS
 * upgrade.
 */

/** Id of the one metadata context (base:allocation) a client can select. */
export const ALLOCATION_CONTEXT_ID = 1
/** Query strings accepted in one meta context option. */
const MAX_QUERIES = 128

/** What the handshake needs from its connection. */
export interface HandshakeChannel {
  readonly host: ConnectionHost
  readonly reader: StreamReader
  /** Send bytes to the client. */
  write(data: Buffer): Promise<void>
  /** Run TLS over the socket (after NBD_OPT_STARTTLS was acknowledged); the reader follows. */
  upgradeTls(credentials: TlsCredentials): Promise<void>
}

/** Metadata contexts selected by the last NBD_OPT_SET_META_CONTEXT, and for which export. */
export interface MetaSelection {
  exportName: string
  allocation: boolean
}

/** What the handshake settled, for the transmission phase. */
export interface Negotiated {
  export: ResolvedExport
  /** Transmission flags sent to the client. */
  flags: number
  structured: boolean
  meta: MetaSelection | null
}

/** A malformed option: reply NBD_REP_ERR_INVALID with this message. */
class InvalidOption extends Error {}

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

/** One client's option negotiation (fixed newstyle, with NBD_FLAG_NO_ZEROES). */
export class Handshake {
  private tlsActive = false
  private structured = false
  private meta: MetaSelection | null = null
  private noZeroes = false

  constructor(private readonly channel: HandshakeChannel) {}

  private get host(): ConnectionHost {
    return this.channel.host
  }

  /** Negotiate until the client picks an export (returned) or leaves (null). */
  async run(): Promise<Negotiated | null> {
    const reader = this.channel.reader
    await this.channel.write(
      encodeGreeting(HANDSHAKE_FLAG.FIXED_NEWSTYLE | HANDSHAKE_FLAG.NO_ZEROES),
    )
    const clientFlags = CLIENT_FLAGS.fields.flags.get(await reader.read(CLIENT_FLAGS.length))
    const known = CLIENT_FLAG.FIXED_NEWSTYLE | CLIENT_FLAG.NO_ZEROES
    if ((clientFlags & ~known) !== 0) {
      throw new ProtocolViolation(
        `the client sent unknown client flags 0x${clientFlags.toString(16)}`,
      )
    }
    const fixed = (clientFlags & CLIENT_FLAG.FIXED_NEWSTYLE) !== 0
    this.noZeroes = (clientFlags & CLIENT_FLAG.NO_ZEROES) !== 0
    if (this.host.tls && !fixed) {
      throw new ProtocolViolation('the client does not speak fixed newstyle, which TLS needs')
    }

    for (let count = 0; ; count++) {
      if (count >= this.host.limits.maxOptions) {
        throw new ProtocolViolation(
          `the client sent more than ${this.host.limits.maxOptions} options`,
        )
      }
      const header = await reader.read(OPTION_HEADER.length)
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
      const data = await reader.read(length)
      const selected = await this.option(option, data)
      if (selected === 'abort') return null
      if (selected) {
        return {
          export: selected,
          flags: this.transmissionFlags(selected),
          structured: this.structured,
          meta: this.meta,
        }
      }
    }
  }

  private reply(option: number, type: number, data?: Uint8Array): Promise<void> {
    return this.channel.write(encodeOptionReply(option, type, data))
  }

  private replyError(option: number, type: number, message: string): Promise<void> {
    return this.channel.write(encodeOptionError(option, type, message))
  }

  /** Handle one option; returns the export to enter transmission with, 'abort', or null. */
  private async option(option: number, data: Buffer): Promise<ResolvedExport | 'abort' | null> {
    if (this.host.shuttingDown && option !== OPTION.ABORT) {
      if (option === OPTION.EXPORT_NAME) throw new ProtocolViolation('the server is shutting down')
      await this.replyError(option, REPLY.ERR_SHUTDOWN, 'The server is shutting down.')
      return null
    }
    if (this.host.tls && !this.tlsActive && option !== OPTION.STARTTLS && option !== OPTION.ABORT) {
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
        `export ${quote(name)} cannot be opened: ${error instanceof Error ? error.message : String(error)}`,
      )
    }
    if (!selected)
      throw new ProtocolViolation(`the client asked for the unknown export ${quote(name)}`)
    await this.channel.write(
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
    const credentials = this.host.tls
    if (!credentials) {
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
    try {
      await this.channel.upgradeTls(credentials)
    } catch (error) {
      throw new ProtocolViolation(
        `the TLS handshake failed: ${(error instanceof Error ? error.message : String(error)).replace(/\.$/, '')}`,
      )
    }
    this.tlsActive = true
    // proto.md: no negotiation state survives STARTTLS.
    this.structured = false
    this.meta = null
  }

  /** The export a name asks for, or null after replying NBD_REP_ERR_UNKNOWN. */
  private async exportOrRefuse(option: number, name: string): Promise<ResolvedExport | null> {
    let selected: ResolvedExport | null
    try {
      selected = await this.host.resolveExport(name)
    } catch (error) {
      await this.replyError(
        option,
        REPLY.ERR_UNKNOWN,
        `Export ${quote(name)} is not available: ${error instanceof Error ? error.message : String(error)}`,
      )
      return null
    }
    if (!selected)
      await this.replyError(option, REPLY.ERR_UNKNOWN, `There is no export named ${quote(name)}.`)
    return selected
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

    const selected = await this.exportOrRefuse(option, name)
    if (!selected) return null
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
      if (!query.includes(':'))
        throw new InvalidOption(`The query ${quote(query)} has no namespace.`)
    }
    const selected = await this.exportOrRefuse(option, name)
    if (!selected) return
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
      // FAST_ZERO is answered from block status: fast only where nothing must be written.
      if (selected.disk.capabilities.blockStatus) flags |= TRANSMISSION_FLAG.SEND_FAST_ZERO
    }
    if (this.structured) flags |= TRANSMISSION_FLAG.SEND_DF
    return flags
  }
}
