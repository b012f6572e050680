import { closeSync } from 'node:fs'
import { constants } from 'node:os'
import type { Socket } from 'node:net'
import { TLSSocket } from 'node:tls'
import { zeroCopySend, type ZeroCopySend } from '../engine/native/index'
import { isDisconnect, ProtocolViolation } from './errors'
import type { ConnectionHost } from './export-types'
import { Handshake, type HandshakeChannel } from './handshake'
import { StreamClosedError, StreamReader } from './reader'
import { startServerTls, type TlsCredentials } from './tls'
import {
  Transmission,
  type Incoming,
  type ReplyPart,
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
 * How long a zero-copy send waits in its thread for a full socket to take bytes before it
 * hands the wait to the event loop (so a client that stops reading holds no thread).
 */
const SEND_WAIT_MS = 2
/** The kinds of the addon's sendParts items besides a file's descriptor. */
const ZEROS = -1
const BUFFER = -2

/** The socket's descriptor, where Node has one (a Unix socket or TCP, not TLS). */
function descriptorOf(socket: Socket | TLSSocket): number | null {
  if (socket instanceof TLSSocket) return null
  const fd = (socket as unknown as { _handle?: { fd?: unknown } })._handle?.fd
  return typeof fd === 'number' && fd >= 0 ? fd : null
}

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
  /** Reply parts queued and not yet handed to the socket, in order (see {@link flushBatch}). */
  private batch: ReplyPart[] = []
  /** Whether {@link batch} holds file parts (then it goes out through {@link sendZeroCopy}). */
  private batchHasFiles = false
  /** The `done` of each reply in {@link batch}. */
  private batchDone: (() => void)[] = []
  /**
   * The parts [from, to) of {@link batch} of each reply that has a `failed` (see
   * {@link SendOptions.failed}): only replies sent from files, so other replies add nothing.
   */
  private batchFailures: PartsOf[] = []
  private batchScheduled = false
  /**
   * Zero-copy sends (sendfile, see {@link sendZeroCopy}): the addon's functions and a
   * descriptor of our own for the socket, set when transmission starts on a plain socket.
   */
  private direct: { send: ZeroCopySend; fd: number } | null = null
  /** A zero-copy send is writing to the socket: nothing else may until it ends. */
  private directBusy = false
  /** Batches handed to Node's socket whose write has not completed. */
  private nodeWrites = 0

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
        this.startZeroCopy()
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
    if (this.direct) {
      // Wakes a zero-copy send waiting for room; its descriptor is closed once it has ended.
      this.direct.send.shutdownSocket(this.direct.fd)
      if (!this.directBusy) this.closeDirect()
    }
    this.wake()
  }

  /** Use zero-copy sends on this socket if it is a plain one and the addon has them. */
  private startZeroCopy(): void {
    const send = zeroCopySend()
    const fd = send ? descriptorOf(this.socket) : null
    if (!send || fd === null) return
    try {
      this.direct = { send, fd: send.dupSocket(fd) }
    } catch (error) {
      this.log(
        'info',
        `replies are copied (no zero-copy send): ${error instanceof Error ? error.message : String(error)}`,
      )
    }
  }

  private closeDirect(): void {
    const direct = this.direct
    if (!direct) return
    this.direct = null
    try {
      closeSync(direct.fd)
    } catch {
      // already closed: nothing to release
    }
  }

  get zeroCopy(): boolean {
    return this.direct !== null && !this.gone
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
      // A zero-copy send (or one waiting for Node's writes to finish) goes out first.
      await this.until(() => !this.directBusy && !this.batchHasFiles)
    }
    if (!this.gone) {
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
  send(buffers: ReplyPart[], options?: SendOptions): Promise<void> {
    if (this.stream) return this.sendAfterStream(buffers, options)
    this.queue(buffers, options)
    return QUEUED
  }

  private async sendAfterStream(buffers: ReplyPart[], options?: SendOptions): Promise<void> {
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
  private queue(buffers: ReplyPart[], { reserved = 0, written, failed }: SendOptions = {}): void {
    // File parts count like buffers: they pin no memory, but a client that reads no replies
    // must still stop being read.
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
    if (failed) {
      const from = this.batch.length
      this.batchFailures.push({ from, to: from + buffers.length, tell: failed })
    }
    for (const buffer of buffers) {
      if (!(buffer instanceof Uint8Array)) {
        if (!this.direct)
          throw new Error('a file part was queued on a connection without zero-copy sends')
        this.batchHasFiles = true
      }
      this.batch.push(buffer)
    }
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
    // One writer at a time: a zero-copy send flushes again when it ends, and one waits for
    // Node's writes to complete (nodeWrites), so the bytes of two replies never interleave.
    if (this.directBusy) return
    const socket = this.socket
    if (this.batchHasFiles && !this.gone && (this.nodeWrites > 0 || socket.writableLength > 0)) {
      if (this.nodeWrites === 0) setTimeout(this.flushBatch, 1)
      return
    }
    const buffers = this.batch
    const callbacks = this.batchDone
    const failures = this.batchFailures
    if (buffers.length === 0) return
    const files = this.batchHasFiles
    this.batch = []
    this.batchDone = []
    this.batchFailures = []
    this.batchHasFiles = false
    const written = (): void => {
      for (const callback of callbacks) callback()
    }
    if (this.gone || socket.destroyed) {
      written()
      return
    }
    if (files) {
      void this.sendZeroCopy(buffers, failures, written)
      return
    }
    this.nodeWrites++
    const completed = (): void => {
      this.nodeWrites--
      written()
      if (this.nodeWrites === 0 && this.batchHasFiles) this.flushBatch()
    }
    if (buffers.length === 1) {
      socket.write(buffers[0] as Buffer, completed)
      return
    }
    socket.cork()
    const last = buffers.length - 1
    buffers.forEach((buffer, index) =>
      socket.write(buffer as Buffer, index === last ? completed : undefined),
    )
    socket.uncork()
  }

  /**
   * Write a batch that holds file parts with the addon's sendParts: buffers and zeros from
   * memory, file parts with sendfile, so their bytes go from the page cache to the socket
   * without a copy through this process (two copies, a read's and the socket's, were the
   * largest part of the server's CPU time in a sequential read). When the socket is full the
   * rest waits for room on the event loop. A failure cuts the connection: bytes of a reply may
   * already be out, and no other reply can follow them.
   */
  private async sendZeroCopy(
    parts: ReplyPart[],
    failures: PartsOf[],
    written: () => void,
  ): Promise<void> {
    const direct = this.direct!
    this.directBusy = true
    // The replies whose file parts could not be read, told once each, before `written`.
    const failed = new Map<(code: string) => void, string>()
    try {
      let items: number[] = []
      let buffers: Uint8Array[] = []
      let left = 0
      const add = (part: ReplyPart): void => {
        if (part instanceof Uint8Array) {
          items.push(BUFFER, buffers.length, part.length)
          buffers.push(part)
        } else {
          items.push(part.fd < 0 ? ZEROS : part.fd, part.fd < 0 ? 0 : part.position, part.length)
        }
        left += part.length
      }
      for (const part of parts) add(part)
      // Parts dropped from the front of `items` (sent by earlier calls).
      let dropped = 0
      while (left > 0 && !this.gone) {
        const result = await direct.send.sendParts(
          direct.fd,
          Float64Array.from(items),
          buffers,
          SEND_WAIT_MS,
        )
        const sent = typeof result === 'number' ? result : result[0]!
        if (typeof result !== 'number') {
          for (let index = 1; index + 1 < result.length; index += 2) {
            const part = dropped + result[index]!
            const owner = failures.find(({ from, to }) => part >= from && part < to)
            if (owner && !failed.has(owner.tell))
              failed.set(owner.tell, errnoName(result[index + 1]!))
          }
        }
        left -= sent
        if (left <= 0 || this.gone) break
        // The socket is full: drop what went out, wait for room on the event loop.
        const rest = skipParts(items, buffers, sent)
        items = rest.items
        buffers = rest.buffers
        dropped += rest.dropped
        await direct.send.waitWritable(direct.fd)
      }
    } catch (error) {
      if (!this.gone)
        this.hangUp(
          `sending a reply failed: ${error instanceof Error ? error.message : String(error)}`,
        )
    } finally {
      this.directBusy = false
      for (const [tell, code] of failed) tell(code)
      written()
      if (this.gone) this.closeDirect()
      else if (this.batch.length > 0) this.flushBatch()
      this.wake()
    }
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

/** The parts [from, to) of a batch that make one reply, and how to tell it a file failed. */
interface PartsOf {
  from: number
  to: number
  tell: (code: string) => void
}

/** sendParts items and buffers without their first `sent` bytes. */
function skipParts(
  items: number[],
  buffers: Uint8Array[],
  sent: number,
): { items: number[]; buffers: Uint8Array[]; dropped: number } {
  const rest: number[] = []
  const kept: Uint8Array[] = []
  let skip = sent
  let dropped = 0
  for (let index = 0; index < items.length; index += 3) {
    const kind = items[index]!
    let position = items[index + 1]!
    const length = items[index + 2]!
    if (skip >= length) {
      skip -= length
      dropped++
      continue
    }
    if (kind === BUFFER) {
      rest.push(BUFFER, kept.length, length - skip)
      kept.push(buffers[position]!.subarray(skip))
    } else {
      if (kind !== ZEROS) position += skip
      rest.push(kind, position, length - skip)
    }
    skip = 0
  }
  return { items: rest, buffers: kept, dropped }
}

/** The name of an errno value ("EIO"), as Node's own errors give it. */
function errnoName(errno: number): string {
  for (const [name, value] of Object.entries(constants.errno)) if (value === errno) return name
  return `errno ${errno}`
}
