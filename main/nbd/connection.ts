import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { isDisconnect, ProtocolViolation } from './errors'
import type { ConnectionHost } from './export-types'
import { Handshake, type HandshakeChannel } from './handshake'
import { COMMAND, type NbdRequest } from './protocol'
import { StreamClosedError, StreamReader } from './reader'
import { startServerTls, type PskKeys } from './tls'
import { Transmission, type Payload, type TransmissionChannel } from './transmission'

/**
 * One client: its socket, the handshake (handshake.ts), then the transmission phase
 * (transmission.ts) with pipelined requests, whose replies may leave out of order. The
 * connection owns what both phases share: the socket and its reader, flow control (how many
 * requests and bytes may be in flight) and shutdown.
 */
export class NbdConnection implements HandshakeChannel, TransmissionChannel {
  private socket: Socket | TLSSocket
  readonly reader: StreamReader
  private phase: 'handshake' | 'transmission' | 'closed' = 'handshake'
  private inFlight = 0
  private inFlightBytes = 0
  private slotWaiter: (() => void) | null = null
  private idle: Promise<void> = Promise.resolve()
  private idleResolve: (() => void) | null = null
  private drainWaiter: Promise<void> | null = null
  private handshakeTimer: NodeJS.Timeout | null = null
  private stopReading = false

  constructor(
    readonly host: ConnectionHost,
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
      const negotiated = await new Handshake(this).run()
      if (this.handshakeTimer) clearTimeout(this.handshakeTimer)
      if (negotiated) {
        this.phase = 'transmission'
        await this.transmission(new Transmission(this, negotiated))
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

  log(level: 'info' | 'warn' | 'error', message: string): void {
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

  // ---- the socket, for both phases -------------------------------------------------------

  async write(data: Buffer): Promise<void> {
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

  async upgradeTls(keys: PskKeys): Promise<void> {
    const leftover = this.reader.detach()
    const secure = await startServerTls(this.socket as Socket, keys, leftover)
    secure.on('error', () => undefined)
    this.socket = secure
    this.reader.attach(secure)
  }

  async send(buffers: Buffer[], written?: () => void): Promise<void> {
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

  // ---- transmission: flow control ---------------------------------------------------------

  private async transmission(transmission: Transmission): Promise<void> {
    const limits = this.host.limits
    for (;;) {
      while (this.inFlight >= limits.maxInFlight || this.inFlightBytes >= limits.maxInFlightBytes) {
        await new Promise<void>((resolve) => (this.slotWaiter = resolve))
      }
      if (this.stopReading) return
      const next = await transmission.next(this.reader, () => this.stopReading)
      if (!next) return
      this.track(transmission, next.request, next.payload)
    }
  }

  private track(transmission: Transmission, request: NbdRequest, payload: Payload | null): void {
    const cost =
      request.type === COMMAND.READ || request.type === COMMAND.WRITE
        ? Math.min(request.length, this.host.limits.maxBlockSize)
        : 0
    this.inFlight++
    this.inFlightBytes += cost
    if (this.inFlight === 1) this.idle = new Promise((resolve) => (this.idleResolve = resolve))
    void this.serveRequest(transmission, request, payload, cost)
  }

  /** Handle one request and release its slot; never rejects. */
  private async serveRequest(
    transmission: Transmission,
    request: NbdRequest,
    payload: Payload | null,
    cost: number,
  ): Promise<void> {
    try {
      await transmission.serve(request, payload?.data ?? null)
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
}
