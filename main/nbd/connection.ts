import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import { isDisconnect, ProtocolViolation } from './errors'
import type { ConnectionHost } from './export-types'
import { Handshake, type HandshakeChannel } from './handshake'
import { StreamClosedError, StreamReader } from './reader'
import { startServerTls, type TlsCredentials } from './tls'
import {
  Transmission,
  type Incoming,
  type SendOptions,
  type TransmissionChannel,
} from './transmission'

/**
 * Request bytes read ahead of the request being parsed. Small: requests are 28 bytes, and a
 * write's payload is read whole whatever this is.
 */
const READ_AHEAD = 256 * 1024
/** What {@link NbdConnection.send} returns once the reply is queued (no promise made per reply). */
const QUEUED: Promise<void> = Promise.resolve()

/**
 * One client: its socket, the handshake (handshake.ts), then the transmission phase
 * (transmission.ts) with pipelined requests, whose replies may leave out of order. The
 * connection owns what both phases share: the socket and its reader, flow control and shutdown.
 *
 * Flow control: `held` counts the bytes this connection pins (reservations of requests being
 * served, reply bytes the socket has not taken yet). Requests are read only while fewer than
 * `maxInFlight` are in flight and `held` is below the connection's share of the server's
 * budget, so a client that does not read its replies stops being read (TCP backpressure).
 *
 * Shutdown: every wait here also ends when the socket closes (`gone`), so no path can keep a
 * connection, and its slot, after its client left: not a write waiting for 'drain', not a
 * request waiting for room, not the close itself (cut after `closeTimeoutMs`).
 */
export class NbdConnection implements HandshakeChannel, TransmissionChannel {
  private socket: Socket | TLSSocket
  readonly reader: StreamReader
  private phase: 'handshake' | 'transmission' | 'closed' = 'handshake'
  /** The socket closed (or was destroyed): nothing more goes in or out. */
  private gone = false
  private inFlight = 0
  private held = 0
  /** Woken on every change that may let a wait end (bytes released, drain, close). */
  private readonly waiters = new Set<() => void>()
  /** Releases of the writes the socket still holds, run at the latest when it closes. */
  private readonly unsent = new Set<() => void>()
  private stream: Promise<void> | null = null
  private timer: NodeJS.Timeout | null = null
  private stopReading = false
  /** Reply buffers queued and not yet handed to the socket, in order (see {@link flushBatch}). */
  private batch: Buffer[] = []
  /** The `done` of each reply in {@link batch}. */
  private batchDone: (() => void)[] = []
  private batchScheduled = false

  constructor(
    readonly host: ConnectionHost,
    socket: Socket,
    readonly id: number,
  ) {
    this.socket = socket
    this.reader = new StreamReader(socket, READ_AHEAD)
    if ('setNoDelay' in socket && typeof socket.setNoDelay === 'function') socket.setNoDelay(true)
    this.watch(socket)
  }

  /** Serve the client until it disconnects or the server closes the connection. */
  async run(): Promise<void> {
    const limits = this.host.limits
    this.setTimer(limits.handshakeTimeoutMs, () => {
      if (this.phase !== 'handshake') return
      this.log('warn', `the handshake took longer than ${limits.handshakeTimeoutMs} ms; closing`)
      this.destroy()
    })
    try {
      const negotiated = await new Handshake(this).run()
      if (negotiated && !this.gone) {
        this.phase = 'transmission'
        this.setTimer(0, null)
        await this.transmission(new Transmission(this, negotiated))
      }
    } catch (error) {
      if (error instanceof ProtocolViolation)
        this.log('warn', `${error.message}; closing the connection`)
      else if (!(error instanceof StreamClosedError) && !isDisconnect(error) && !this.gone) {
        this.log(
          'warn',
          `connection failed: ${error instanceof Error ? error.message : String(error)}`,
        )
      }
    } finally {
      // Requests in flight finish and their replies go out, within closeTimeoutMs.
      this.setTimer(limits.closeTimeoutMs, () => this.destroy())
      // Even once the client is gone, requests finish (every wait of theirs ends with it), so
      // that what they hold is released before the slot is.
      while (this.inFlight > 0) await new Promise<void>((resolve) => this.waiters.add(resolve))
      await this.close()
      this.setTimer(0, null)
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
    this.reader.abort()
    this.wake()
  }

  log(level: 'info' | 'warn' | 'error', message: string): void {
    this.host.log({ level, connection: this.id, message })
  }

  hangUp(message: string): void {
    this.log('warn', `${message}; closing the connection`)
    this.destroy()
  }

  // ---- the socket ---------------------------------------------------------------------------

  private watch(socket: Socket | TLSSocket): void {
    socket.on('error', () => undefined)
    socket.on('drain', () => this.wake())
    socket.once('close', () => this.markGone())
  }

  private setTimer(ms: number, action: (() => void) | null): void {
    if (this.timer) clearTimeout(this.timer)
    this.timer = action ? setTimeout(action, ms) : null
    this.timer?.unref()
  }

  private markGone(): void {
    if (this.gone) return
    this.gone = true
    this.phase = 'closed'
    // Requests still buffered are dropped: their client is gone, nobody would read the replies.
    this.reader.abort()
    for (const release of [...this.unsent]) release()
    this.wake()
  }

  private destroy(): void {
    this.phase = 'closed'
    this.socket.destroy()
    this.markGone()
  }

  /** End the socket once its replies are out (or the close timer cuts it), and wait for that. */
  private async close(): Promise<void> {
    if (!this.gone) {
      this.flushBatch()
      this.phase = 'closed'
      const socket = this.socket
      socket.end(() => socket.destroy())
    }
    await this.until(() => false)
  }

  private wake(): void {
    if (this.waiters.size === 0) return
    const waiters = [...this.waiters]
    this.waiters.clear()
    for (const waiter of waiters) waiter()
  }

  /** Resolves once `ready()` holds (true) or the socket is gone (false). */
  async until(ready: () => boolean): Promise<boolean> {
    while (!this.gone && !ready()) await new Promise<void>((resolve) => this.waiters.add(resolve))
    return !this.gone
  }

  async write(data: Buffer): Promise<void> {
    if (this.phase === 'closed') return
    this.flushBatch()
    if (!this.socket.write(data)) await this.until(() => !this.socket.writableNeedDrain)
  }

  async upgradeTls(credentials: TlsCredentials): Promise<void> {
    const leftover = this.reader.detach()
    const secure = await startServerTls(this.socket as Socket, credentials, leftover)
    this.socket = secure
    this.watch(secure)
    this.reader.attach(secure)
  }

  // ---- flow control -------------------------------------------------------------------------

  reserve(bytes: number): void {
    this.held += bytes
    this.host.account(bytes)
  }

  release(bytes: number): void {
    this.held -= bytes
    this.host.account(-bytes)
    this.wake()
  }

  /** Whether this connection holds less than its share of the server's budget. */
  private hasRoom(): boolean {
    return this.host.hasRoom(this.held)
  }

  async acquire(bytes: number): Promise<boolean> {
    // Checked and reserved in one step: every waiter woken at once must not all see the room.
    while (!this.gone && !this.hasRoom())
      await new Promise<void>((resolve) => this.waiters.add(resolve))
    if (this.gone) return false
    this.reserve(bytes)
    return true
  }

  /** Queue a reply now unless a streamed reply holds the socket (then after it). */
  send(buffers: Buffer[], options?: SendOptions): Promise<void> {
    if (this.stream) return this.sendAfterStream(buffers, options)
    this.queue(buffers, options)
    return QUEUED
  }

  private async sendAfterStream(buffers: Buffer[], options?: SendOptions): Promise<void> {
    while (this.stream) await this.stream
    this.queue(buffers, options)
  }

  async exclusive(
    body: (send: (buffers: Buffer[], options?: SendOptions) => void) => Promise<void>,
  ): Promise<void> {
    while (this.stream) await this.stream
    let end!: () => void
    this.stream = new Promise<void>((resolve) => (end = resolve))
    try {
      await body((buffers, options) => this.queue(buffers, options))
    } finally {
      this.stream = null
      end()
    }
  }

  /**
   * Queue one reply's buffers in one synchronous run; the bytes not yet reserved are charged
   * now, and all of them released (and `written` run) once the socket no longer needs them.
   * The buffers go out with the rest of the batch ({@link flushBatch}).
   */
  private queue(buffers: Buffer[], { reserved = 0, written }: SendOptions = {}): void {
    let total = 0
    for (const buffer of buffers) total += buffer.length
    if (total >= reserved) this.reserve(total - reserved)
    else this.release(reserved - total)
    let pending = true
    const done = (): void => {
      if (!pending) return
      pending = false
      this.unsent.delete(done)
      this.release(total)
      written?.()
    }
    if (this.phase === 'closed' || this.gone || this.socket.destroyed) {
      done()
      return
    }
    this.unsent.add(done)
    for (const buffer of buffers) this.batch.push(buffer)
    this.batchDone.push(done)
    if (!this.batchScheduled) {
      this.batchScheduled = true
      setImmediate(this.flushBatch)
    }
  }

  /**
   * Write every reply queued since the last flush in one writev. Replies are queued as their
   * requests complete, often many in one turn of the event loop (the requests of one socket
   * read, the thread-pool reads and writes that finished together); the flush runs once that
   * turn's I/O callbacks are done, so they share one system call and one wake-up of the
   * client instead of one each (measured in tests/bench/nbd-throughput.ts: a write system
   * call per 4 KiB reply was the server's largest cost after the disk's).
   */
  private readonly flushBatch = (): void => {
    this.batchScheduled = false
    const buffers = this.batch
    const callbacks = this.batchDone
    if (buffers.length === 0) return
    this.batch = []
    this.batchDone = []
    const socket = this.socket
    const written = (): void => {
      for (const callback of callbacks) callback()
    }
    if (this.gone || socket.destroyed) {
      written()
      return
    }
    if (buffers.length === 1) {
      socket.write(buffers[0]!, written)
      return
    }
    socket.cork()
    const last = buffers.length - 1
    buffers.forEach((buffer, index) => socket.write(buffer, index === last ? written : undefined))
    socket.uncork()
  }

  // ---- transmission: reading requests -------------------------------------------------------

  private async transmission(transmission: Transmission): Promise<void> {
    const maxInFlight = this.host.limits.maxInFlight
    for (;;) {
      await this.until(() => this.stopReading || (this.inFlight < maxInFlight && this.hasRoom()))
      if (this.stopReading || this.gone) return
      const next = await transmission.next(this.reader, () => this.stopReading)
      if (!next) return
      this.inFlight++
      void this.serveRequest(transmission, next)
    }
  }

  /** Handle one request and release its slot and reservation; never rejects. */
  private async serveRequest(transmission: Transmission, incoming: Incoming): Promise<void> {
    try {
      await transmission.serve(incoming)
    } catch (error) {
      this.log(
        'error',
        `internal error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
      )
    }
    incoming.payload?.release()
    this.release(incoming.reserved)
    incoming.reserved = 0
    this.inFlight--
    this.wake()
  }
}
