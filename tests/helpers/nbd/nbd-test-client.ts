// A deliberately small NBD client for tests: it speaks the wire format byte by byte (its own
// encoding, independent of main/nbd/protocol.ts's codecs) so that tests can also send what a
// correct client never would.
import { connect, type Socket } from 'node:net'

export const MAGIC = {
  nbd: 0x4e42444d41474943n,
  ihaveopt: 0x49484156454f5054n,
  optionReply: 0x3e889045565a9n,
  request: 0x25609513,
  simple: 0x67446698,
  structured: 0x668e33ef,
}

/** A request as the wire carries it (type and flags as numbers; a bad magic is allowed). */
export interface WireRequest {
  type: number
  flags?: number
  offset?: number
  length?: number
  data?: Buffer
  magic?: number
}

export interface OptionReply {
  option: number
  type: number
  data: Buffer
}

export interface Chunk {
  kind: 'simple' | 'structured'
  handle: bigint
  error: number
  flags: number
  type: number
  payload: Buffer
}

export interface ReplyResult {
  error: number
  message: string
  /** Read data assembled from data and hole chunks (holes as zeros). */
  data: Buffer
  holes: { offset: number; length: number }[]
  dataChunks: number
  extents: { length: number; flags: number }[]
  chunks: Chunk[]
}

/**
 * Byte-exact reading from a socket, independent of the server's reader. The pieces that
 * arrived are kept in a list and joined only when a read takes them: joining on every arrival
 * copied a 32 MiB reply once per socket chunk.
 */
class Incoming {
  private pieces: Buffer[] = []
  private available = 0
  private waiting: {
    size: number
    resolve: (data: Buffer) => void
    reject: (error: Error) => void
  } | null = null
  ended = false

  constructor(socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.pieces.push(chunk)
      this.available += chunk.length
      this.check()
    })
    const end = (): void => {
      this.ended = true
      const waiter = this.waiting
      this.waiting = null
      waiter?.reject(new Error('connection closed'))
    }
    socket.on('close', end)
    socket.on('end', end)
    socket.on('error', () => undefined)
  }

  /** The next `size` bytes, in a buffer of their own; the caller checked they arrived. */
  private take(size: number): Buffer {
    const data = Buffer.allocUnsafe(size)
    let filled = 0
    while (filled < size) {
      const piece = this.pieces[0]!
      const used = Math.min(piece.length, size - filled)
      piece.copy(data, filled, 0, used)
      filled += used
      if (used === piece.length) this.pieces.shift()
      else this.pieces[0] = piece.subarray(used)
    }
    this.available -= size
    return data
  }

  private check(): void {
    const waiter = this.waiting
    if (waiter && this.available >= waiter.size) {
      this.waiting = null
      waiter.resolve(this.take(waiter.size))
    }
  }

  read(size: number): Promise<Buffer> {
    if (this.available >= size) return Promise.resolve(this.take(size))
    if (this.ended) return Promise.reject(new Error('connection closed'))
    return new Promise((resolve, reject) => {
      this.waiting = { size, resolve, reject }
    })
  }
}

export class NbdTestClient {
  readonly incoming: Incoming
  readonly closed: Promise<void>
  structured = false
  private nextHandle = 1n

  private constructor(readonly socket: Socket) {
    this.incoming = new Incoming(socket)
    this.closed = new Promise((resolve) => socket.once('close', () => resolve()))
  }

  /** A client on an already connected socket (for example a TLS socket after STARTTLS). */
  static fromSocket(socket: Socket): NbdTestClient {
    return new NbdTestClient(socket)
  }

  static connect(path: string): Promise<NbdTestClient> {
    return new Promise((resolve, reject) => {
      const socket = connect(path)
      socket.once('connect', () => resolve(new NbdTestClient(socket)))
      socket.once('error', reject)
    })
  }

  write(data: Buffer): void {
    this.socket.write(data)
  }

  close(): void {
    this.socket.destroy()
  }

  async greeting(): Promise<{ magic: bigint; optionMagic: bigint; flags: number }> {
    const data = await this.incoming.read(18)
    return {
      magic: data.readBigUInt64BE(0),
      optionMagic: data.readBigUInt64BE(8),
      flags: data.readUInt16BE(16),
    }
  }

  sendClientFlags(flags: number): void {
    const data = Buffer.alloc(4)
    data.writeUInt32BE(flags)
    this.write(data)
  }

  sendOption(
    option: number,
    data: Buffer = Buffer.alloc(0),
    length = data.length,
    magic = MAGIC.ihaveopt,
  ): void {
    const header = Buffer.alloc(16)
    header.writeBigUInt64BE(magic, 0)
    header.writeUInt32BE(option, 8)
    header.writeUInt32BE(length, 12)
    this.write(Buffer.concat([header, data]))
  }

  async readOptionReply(): Promise<OptionReply> {
    const header = await this.incoming.read(20)
    if (header.readBigUInt64BE(0) !== MAGIC.optionReply) throw new Error('bad option reply magic')
    const length = header.readUInt32BE(16)
    return {
      option: header.readUInt32BE(8),
      type: header.readUInt32BE(12),
      data: await this.incoming.read(length),
    }
  }

  /** Read option replies up to and including the final one (ACK or an error). */
  async readOptionReplies(): Promise<OptionReply[]> {
    const replies: OptionReply[] = []
    for (;;) {
      const reply = await this.readOptionReply()
      replies.push(reply)
      if (reply.type === 1 || reply.type >= 0x80000000) return replies
    }
  }

  static infoData(name: string, requests: number[]): Buffer {
    const nameBytes = Buffer.from(name)
    const data = Buffer.alloc(4 + nameBytes.length + 2 + requests.length * 2)
    data.writeUInt32BE(nameBytes.length, 0)
    nameBytes.copy(data, 4)
    data.writeUInt16BE(requests.length, 4 + nameBytes.length)
    requests.forEach((request, index) =>
      data.writeUInt16BE(request, 6 + nameBytes.length + index * 2),
    )
    return data
  }

  static metaData(name: string, queries: string[]): Buffer {
    const parts: Buffer[] = []
    const nameBytes = Buffer.from(name)
    const head = Buffer.alloc(4)
    head.writeUInt32BE(nameBytes.length)
    parts.push(head, nameBytes)
    const count = Buffer.alloc(4)
    count.writeUInt32BE(queries.length)
    parts.push(count)
    for (const query of queries) {
      const bytes = Buffer.from(query)
      const length = Buffer.alloc(4)
      length.writeUInt32BE(bytes.length)
      parts.push(length, bytes)
    }
    return Buffer.concat(parts)
  }

  /** Handshake up to transmission with NBD_OPT_GO. Returns the export size and flags. */
  async negotiate(
    options: {
      structured?: boolean
      meta?: boolean
      exportName?: string
      clientFlags?: number
      greeted?: boolean
    } = {},
  ): Promise<{
    size: number
    flags: number
    blockSize: { minimum: number; preferred: number; maximum: number } | null
    replies: OptionReply[]
  }> {
    if (!options.greeted) {
      await this.greeting()
      this.sendClientFlags(options.clientFlags ?? 3)
    }
    const name = options.exportName ?? ''
    if (options.structured ?? true) {
      this.sendOption(8)
      const reply = await this.readOptionReply()
      if (reply.type !== 1) throw new Error(`structured replies refused: ${reply.type}`)
      this.structured = true
    }
    if (options.meta ?? true) {
      this.sendOption(10, NbdTestClient.metaData(name, ['base:allocation']))
      const replies = await this.readOptionReplies()
      if (replies[replies.length - 1]!.type !== 1) throw new Error('meta context refused')
    }
    this.sendOption(7, NbdTestClient.infoData(name, [3]))
    const replies = await this.readOptionReplies()
    const last = replies[replies.length - 1]!
    if (last.type !== 1)
      throw new Error(`NBD_OPT_GO failed: 0x${last.type.toString(16)} ${last.data.toString()}`)
    let size = -1
    let flags = 0
    let blockSize = null
    for (const reply of replies) {
      if (reply.type !== 3) continue
      const info = reply.data.readUInt16BE(0)
      if (info === 0) {
        size = Number(reply.data.readBigUInt64BE(2))
        flags = reply.data.readUInt16BE(10)
      } else if (info === 3) {
        blockSize = {
          minimum: reply.data.readUInt32BE(2),
          preferred: reply.data.readUInt32BE(6),
          maximum: reply.data.readUInt32BE(10),
        }
      }
    }
    return { size, flags, blockSize, replies }
  }

  /** Send one request; returns its handle. */
  sendRequest(request: WireRequest): bigint {
    const handle = this.nextHandle++
    const header = Buffer.alloc(28)
    header.writeUInt32BE(request.magic ?? MAGIC.request, 0)
    header.writeUInt16BE(request.flags ?? 0, 4)
    header.writeUInt16BE(request.type, 6)
    header.writeBigUInt64BE(handle, 8)
    header.writeBigUInt64BE(BigInt(request.offset ?? 0), 16)
    header.writeUInt32BE(request.length ?? request.data?.length ?? 0, 24)
    this.write(request.data ? Buffer.concat([header, request.data]) : header)
    return handle
  }

  /** Read one reply message (a simple reply, or one structured chunk). `readLength` sizes simple read replies. */
  async readChunk(readLength = 0): Promise<Chunk> {
    const head = await this.incoming.read(4)
    const magic = head.readUInt32BE(0)
    if (magic === MAGIC.simple) {
      const rest = await this.incoming.read(12)
      const error = rest.readUInt32BE(0)
      const payload =
        error === 0 && readLength > 0 ? await this.incoming.read(readLength) : Buffer.alloc(0)
      return { kind: 'simple', handle: rest.readBigUInt64BE(4), error, flags: 1, type: 0, payload }
    }
    if (magic === MAGIC.structured) {
      const rest = await this.incoming.read(16)
      const length = rest.readUInt32BE(12)
      const payload = await this.incoming.read(length)
      const type = rest.readUInt16BE(2)
      const error = type & 0x8000 ? payload.readUInt32BE(0) : 0
      return {
        kind: 'structured',
        handle: rest.readBigUInt64BE(4),
        error,
        flags: rest.readUInt16BE(0),
        type,
        payload,
      }
    }
    throw new Error(`bad reply magic 0x${magic.toString(16)}`)
  }

  /** Read the whole reply to one request (in order: tests send one at a time unless noted). */
  async readReply(
    request: { offset?: number; length?: number; read?: boolean } = {},
  ): Promise<ReplyResult> {
    const offset = request.offset ?? 0
    const length = request.length ?? 0
    const result: ReplyResult = {
      error: 0,
      message: '',
      data: Buffer.alloc(request.read ? length : 0),
      holes: [],
      dataChunks: 0,
      extents: [],
      chunks: [],
    }
    for (;;) {
      const chunk = await this.readChunk(request.read && !this.structured ? length : 0)
      result.chunks.push(chunk)
      if (chunk.kind === 'simple') {
        result.error = chunk.error
        if (request.read && chunk.error === 0) chunk.payload.copy(result.data)
        return result
      }
      if (chunk.type === 1) {
        const at = Number(chunk.payload.readBigUInt64BE(0))
        chunk.payload.copy(result.data, at - offset, 8)
        result.dataChunks++
      } else if (chunk.type === 2) {
        const at = Number(chunk.payload.readBigUInt64BE(0))
        const size = chunk.payload.readUInt32BE(8)
        result.data.fill(0, at - offset, at - offset + size)
        result.holes.push({ offset: at, length: size })
      } else if (chunk.type === 5) {
        for (let at = 4; at < chunk.payload.length; at += 8) {
          result.extents.push({
            length: chunk.payload.readUInt32BE(at),
            flags: chunk.payload.readUInt32BE(at + 4),
          })
        }
      } else if (chunk.type & 0x8000) {
        result.error = chunk.payload.readUInt32BE(0)
        const messageLength = chunk.payload.readUInt16BE(4)
        result.message = chunk.payload.subarray(6, 6 + messageLength).toString()
      }
      if (chunk.flags & 1) return result
    }
  }

  async read(offset: number, length: number, flags = 0): Promise<ReplyResult> {
    this.sendRequest({ type: 0, flags, offset, length })
    return this.readReply({ offset, length, read: true })
  }

  async writeData(offset: number, data: Buffer, flags = 0): Promise<ReplyResult> {
    this.sendRequest({ type: 1, flags, offset, data })
    return this.readReply()
  }

  async command(type: number, offset = 0, length = 0, flags = 0): Promise<ReplyResult> {
    this.sendRequest({ type, flags, offset, length })
    return this.readReply()
  }

  disconnect(): void {
    this.sendRequest({ type: 2 })
  }
}
