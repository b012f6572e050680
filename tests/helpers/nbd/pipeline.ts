// Pipelined requests for tests that keep many in flight and check every reply (the attack
// suite, the power-cut test).
import { MAGIC, type NbdTestClient, type WireRequest } from './nbd-test-client'

export type { WireRequest }

const MAX_READ = 32 * 1024 * 1024

/** The whole reply to one request: its error, and for a successful read, its data. */
export interface WireReply {
  error: number
  message: string
  data: Buffer | null
}

interface Waiting {
  request: WireRequest
  data: Buffer | null
  error: number
  message: string
  resolve: (reply: WireReply) => void
  reject: (error: Error) => void
}

/**
 * Pipelined requests on one negotiated connection: send many, and get each reply (simple or
 * structured chunks, in any order) by its handle. A reply nobody asked for, or a malformed one,
 * fails every request in flight; so does the connection closing.
 */
export class Pipeline {
  private readonly waiting = new Map<bigint, Waiting>()
  private failure: Error | null = null
  /** Resolves when the connection closed (after failing what was still in flight). */
  readonly finished: Promise<void>

  constructor(
    readonly client: NbdTestClient,
    private readonly structured: boolean,
  ) {
    this.finished = this.receive()
  }

  /** Requests sent whose reply has not fully arrived. */
  get inFlight(): number {
    return this.waiting.size
  }

  send(request: WireRequest): Promise<WireReply> {
    if (this.failure) return Promise.reject(this.failure)
    return new Promise((resolve, reject) => {
      const handle = this.client.sendRequest(request)
      const reads = request.type === 0 && this.structured && (request.length ?? 0) <= MAX_READ
      this.waiting.set(handle, {
        request,
        data: reads ? Buffer.alloc(request.length ?? 0) : null,
        error: 0,
        message: '',
        resolve,
        reject,
      })
    })
  }

  private async receive(): Promise<void> {
    const incoming = this.client.incoming
    try {
      for (;;) {
        const head = await incoming.read(4)
        const magic = head.readUInt32BE(0)
        if (magic === MAGIC.simple) {
          const rest = await incoming.read(12)
          const entry = this.entry(rest.readBigUInt64BE(4))
          entry.error = rest.readUInt32BE(0)
          if (entry.request.type === 0 && entry.error === 0)
            entry.data = await incoming.read(entry.request.length ?? 0)
          this.finish(rest.readBigUInt64BE(4), entry)
        } else if (magic === MAGIC.structured) {
          const rest = await incoming.read(16)
          const handle = rest.readBigUInt64BE(4)
          const type = rest.readUInt16BE(2)
          const payload = await incoming.read(rest.readUInt32BE(12))
          const entry = this.entry(handle)
          const at = (): number => Number(payload.readBigUInt64BE(0)) - (entry.request.offset ?? 0)
          if (type & 0x8000) {
            entry.error = payload.readUInt32BE(0)
            entry.message = payload.subarray(6, 6 + payload.readUInt16BE(4)).toString()
          } else if (type === 1) payload.copy(entry.data!, at(), 8)
          else if (type === 2) entry.data!.fill(0, at(), at() + payload.readUInt32BE(8))
          if (rest.readUInt16BE(0) & 1) this.finish(handle, entry)
        } else {
          throw new Error(`a reply with the bad magic 0x${magic.toString(16)}`)
        }
      }
    } catch (error) {
      this.failure = error instanceof Error ? error : new Error(String(error))
      for (const entry of this.waiting.values()) entry.reject(this.failure)
      this.waiting.clear()
    }
  }

  private entry(handle: bigint): Waiting {
    const entry = this.waiting.get(handle)
    if (!entry) throw new Error(`a reply for handle ${handle}, which nobody waits for`)
    return entry
  }

  private finish(handle: bigint, entry: Waiting): void {
    this.waiting.delete(handle)
    entry.resolve({
      error: entry.error,
      message: entry.message,
      data: entry.error === 0 ? entry.data : null,
    })
  }
}
