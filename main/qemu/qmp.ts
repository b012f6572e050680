import { EventEmitter } from 'node:events'
import { connect, type Socket } from 'node:net'
import { EngineError } from '../engine/errors'

/** An asynchronous QMP event (SHUTDOWN, POWERDOWN, BLOCK_IO_ERROR, ...). */
export interface QmpEvent {
  event: string
  data?: unknown
  timestamp?: { seconds: number; microseconds: number }
}

/** Longest QMP message accepted; a longer line closes the connection. */
const MAX_LINE_BYTES = 16 * 1024 * 1024

interface Pending {
  resolve: (value: unknown) => void
  reject: (error: Error) => void
}

/**
 * A QMP client (QEMU's JSON control protocol, docs/interop/qmp-spec): reads the greeting,
 * enters command mode with qmp_capabilities, runs commands by id, and emits 'event' for
 * asynchronous events and 'close' when the connection ends.
 */
export class QmpClient extends EventEmitter {
  private buffer = ''
  private nextId = 1
  private readonly pending = new Map<string, Pending>()
  private closed = false
  /** The greeting's QMP object (version and capabilities). */
  greeting: unknown = null

  private constructor(private readonly socket: Socket) {
    super()
    socket.setEncoding('utf8')
    socket.on('data', (text: string) => this.receive(text))
    socket.on('error', () => undefined)
    socket.on('close', () => this.finish())
  }

  /**
   * Connect to QEMU's QMP socket and negotiate. Retries while the socket does not exist yet
   * (QEMU creates it shortly after starting) until `timeoutMs`, or until `alive()` says QEMU
   * is gone.
   */
  static async connect(
    path: string,
    options: { timeoutMs?: number; alive?: () => boolean } = {},
  ): Promise<QmpClient> {
    const deadline = Date.now() + (options.timeoutMs ?? 30_000)
    for (;;) {
      const socket = await new Promise<Socket | NodeJS.ErrnoException>((resolve) => {
        const attempt = connect(path)
        attempt.once('connect', () => resolve(attempt))
        attempt.once('error', (error: NodeJS.ErrnoException) => resolve(error))
      })
      if (!(socket instanceof Error)) {
        const client = new QmpClient(socket)
        await client.negotiate(Math.max(1000, deadline - Date.now()))
        return client
      }
      const retry = socket.code === 'ENOENT' || socket.code === 'ECONNREFUSED'
      if (!retry || Date.now() > deadline || (options.alive && !options.alive())) {
        throw new EngineError(
          'IO_ERROR',
          `Cannot connect to QEMU's QMP socket ${path}: ${socket.message}.`,
          { path, cause: socket },
        )
      }
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
  }

  private async negotiate(timeoutMs: number): Promise<void> {
    const greeting = await new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new EngineError('IO_ERROR', 'QEMU sent no QMP greeting.')),
        timeoutMs,
      )
      this.once('greeting', (value: unknown) => {
        clearTimeout(timer)
        resolve(value)
      })
      this.once('close', () => {
        clearTimeout(timer)
        reject(new EngineError('IO_ERROR', 'The QMP connection closed before the greeting.'))
      })
    })
    this.greeting = greeting
    await this.execute('qmp_capabilities')
  }

  /** Whether the connection is open. */
  get connected(): boolean {
    return !this.closed
  }

  /** Run a command; resolves with its `return` value, rejects with its `error`. */
  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    if (this.closed)
      return Promise.reject(new EngineError('IO_ERROR', `QMP is closed; cannot run ${command}.`))
    const id = `addcow-${this.nextId++}`
    const message = JSON.stringify(
      args ? { execute: command, arguments: args, id } : { execute: command, id },
    )
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject })
      this.socket.write(message + '\n')
    })
  }

  /** Close the connection; pending commands fail. */
  close(): void {
    this.socket.destroy()
    this.finish()
  }

  private receive(text: string): void {
    this.buffer += text
    for (;;) {
      const end = this.buffer.indexOf('\n')
      if (end < 0) break
      const line = this.buffer.slice(0, end).trim()
      this.buffer = this.buffer.slice(end + 1)
      if (line !== '') this.dispatch(line)
    }
    if (this.buffer.length > MAX_LINE_BYTES) this.close()
  }

  private dispatch(line: string): void {
    let message: Record<string, unknown>
    try {
      message = JSON.parse(line) as Record<string, unknown>
    } catch {
      return
    }
    if (typeof message !== 'object' || message === null) return
    if ('QMP' in message) {
      this.emit('greeting', message.QMP)
      return
    }
    if (typeof message.event === 'string') {
      this.emit('event', message as unknown as QmpEvent)
      return
    }
    const id = typeof message.id === 'string' ? message.id : null
    const pending = id ? this.pending.get(id) : undefined
    if (!id || !pending) return
    this.pending.delete(id)
    if ('error' in message) {
      const error = message.error as { class?: string; desc?: string } | undefined
      pending.reject(
        new EngineError(
          'IO_ERROR',
          `QMP error ${error?.class ?? ''}: ${error?.desc ?? 'unknown'}.`,
          { value: error?.class },
        ),
      )
    } else {
      pending.resolve(message.return)
    }
  }

  private finish(): void {
    if (this.closed) return
    this.closed = true
    for (const pending of this.pending.values())
      pending.reject(new EngineError('IO_ERROR', 'The QMP connection closed.'))
    this.pending.clear()
    this.emit('close')
  }
}
