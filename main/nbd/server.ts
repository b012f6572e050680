import { EventEmitter } from 'node:events'
import { chmod, rm } from 'node:fs/promises'
import { createServer, type Server, type Socket } from 'node:net'
import { resolve } from 'node:path'
import type { Disk } from '../engine/disk'
import { EngineError, wrapIoError } from '../engine/errors'
import { useServerReads } from '../engine/file'
import { assertSocketPathFits, clearStaleSocket } from '../engine/unix-socket'
import { BufferPool } from './buffer-pool'
import { NbdConnection } from './connection'
import {
  DEFAULT_LIMITS,
  type ConnectionHost,
  type NbdExportOptions,
  type NbdLimits,
  type NbdLogEvent,
  type ResolvedExport,
} from './export-types'
import { isLoopbackHost, type TlsCredentials } from './tls'
import { nbdUri, type NbdAddress } from './uri'

/** Where to listen: a Unix socket, or TCP (host defaults to 127.0.0.1; port 0 picks one). */
export type NbdListenTarget = { socket: string } | { host?: string; port: number }

/** How an {@link NbdServer} serves its exports. */
export interface NbdServerOptions {
  exports: NbdExportOptions[]
  /** Pre-shared keys or X.509 certificates; when given, every connection must start TLS (FORCEDTLS). */
  tls?: TlsCredentials | null
  limits?: Partial<NbdLimits>
  /** Connections served at once; more are closed on arrival (default 64). */
  maxConnections?: number
}

interface ExportSlot {
  options: NbdExportOptions
  opened: Promise<ResolvedExport> | null
  resolved: ResolvedExport | null
}

/**
 * An NBD server (the NBD project's doc/proto.md) over engine disks: fixed newstyle handshake,
 * structured replies, base:allocation, many clients at once, optional TLS with pre-shared keys or X.509 certificates.
 *
 * Emits 'log' ({@link NbdLogEvent}) for protocol violations and I/O errors, and 'connection' /
 * 'disconnect' with the connection number. A broken or hostile client only ever loses its own
 * connection.
 */
export class NbdServer extends EventEmitter implements ConnectionHost {
  readonly limits: NbdLimits
  readonly tls: TlsCredentials | null
  readonly pool = new BufferPool()
  private readonly exports: ExportSlot[]
  private readonly maxConnections: number
  private readonly connections = new Map<NbdConnection, Promise<void>>()
  private server: Server | null = null
  private socketPath: string | null = null
  private nextId = 1
  private closing: Promise<void> | null = null
  private held = 0
  address: NbdAddress | null = null

  constructor(options: NbdServerOptions) {
    super()
    if (options.exports.length === 0)
      throw new EngineError('BAD_ARGUMENT', 'An NBD server needs at least one export.')
    const names = new Set(options.exports.map((entry) => entry.name))
    if (names.size !== options.exports.length)
      throw new EngineError('BAD_ARGUMENT', 'Export names must be unique.')
    for (const entry of options.exports) {
      if (Buffer.byteLength(entry.name, 'utf8') > 4096 || entry.name.includes('\0')) {
        throw new EngineError(
          'BAD_ARGUMENT',
          `The export name '${entry.name.slice(0, 64)}' is longer than 4096 bytes or holds a NUL.`,
          {
            field: 'export name',
          },
        )
      }
    }
    this.exports = options.exports.map((entry) => ({
      options: entry,
      opened: null,
      resolved: null,
    }))
    this.limits = { ...DEFAULT_LIMITS, ...options.limits }
    this.tls = options.tls ?? null
    this.maxConnections = options.maxConnections ?? 64
  }

  get shuttingDown(): boolean {
    return this.closing !== null
  }

  /** Connections being served. */
  get connectionCount(): number {
    return this.connections.size
  }

  /** Bytes all connections hold: payloads being applied, replies their sockets have not taken. */
  get bufferedBytes(): number {
    return this.held
  }

  /**
   * Whether a connection holding `held` bytes may take more. Each connection is always allowed
   * its floor, `maxServerBytes / maxConnections`, whatever the others hold, so no client waits
   * on another; beyond it, up to `maxServerBytes / connections` (at most `maxConnectionBytes`)
   * while all connections together hold less than `maxServerBytes`.
   */
  hasRoom(held: number): boolean {
    const { maxConnectionBytes, maxServerBytes } = this.limits
    if (held < Math.min(maxConnectionBytes, maxServerBytes / this.maxConnections)) return true
    const share = Math.min(maxConnectionBytes, maxServerBytes / Math.max(1, this.connections.size))
    return held < share && this.held < maxServerBytes
  }

  account(delta: number): void {
    this.held += delta
  }

  log(event: NbdLogEvent): void {
    this.emit('log', event)
  }

  listExports(): { name: string; description: string }[] {
    return this.exports.map((slot) => ({
      name: slot.options.name,
      description: slot.options.description ?? '',
    }))
  }

  async resolveExport(name: string): Promise<ResolvedExport | null> {
    const slot =
      this.exports.find((entry) => entry.options.name === name) ??
      (name === '' ? this.exports[0] : undefined)
    if (!slot) return null
    slot.opened ??= this.open(slot)
    try {
      return await slot.opened
    } catch (error) {
      slot.opened = null
      throw error
    }
  }

  private async open(slot: ExportSlot): Promise<ResolvedExport> {
    const source = slot.options.disk
    const disk: Disk = typeof source === 'function' ? await source() : source
    const resolved: ResolvedExport = {
      name: slot.options.name,
      description: slot.options.description ?? '',
      disk,
      readOnly: (slot.options.readOnly ?? false) || disk.readOnly || !disk.capabilities.write,
    }
    slot.resolved = resolved
    return resolved
  }

  /** Serve a connected socket (what listen() does for each client; tests call it directly). */
  accept(socket: Socket): void {
    if (this.closing || this.connections.size >= this.maxConnections) {
      this.log({
        level: 'warn',
        connection: 0,
        message: this.closing
          ? 'refused a connection: shutting down'
          : `refused a connection: ${this.maxConnections} already open`,
      })
      socket.on('error', () => undefined)
      socket.destroy()
      return
    }
    const id = this.nextId++
    const connection = new NbdConnection(this, socket, id)
    this.emit('connection', id)
    const releaseReads = useServerReads()
    const running = connection.run().finally(() => {
      releaseReads()
      this.connections.delete(connection)
      // The last client left: the buffers it needed go back now, not at the next sweep.
      if (this.connections.size === 0) this.pool.trim()
      this.emit('disconnect', id)
    })
    this.connections.set(connection, running)
  }

  /**
   * Listen on a Unix socket or TCP. TCP binds 127.0.0.1 unless a host is named, and a
   * non-loopback host requires TLS (DESIGN.md, "Security rules"). A stale Unix socket file is
   * replaced; a live one (another server) or any other file is an error.
   */
  async listen(target: NbdListenTarget): Promise<NbdAddress> {
    if (this.server) throw new EngineError('BAD_REQUEST', 'The NBD server is already listening.')
    const server = createServer({ noDelay: true }, (socket) => this.accept(socket))
    server.on('error', (error) =>
      this.log({ level: 'error', connection: 0, message: `listener error: ${error.message}` }),
    )
    if ('socket' in target) {
      const path = resolve(target.socket)
      assertSocketPathFits(path, 'socket')
      await clearStaleSocket(path, 'socket')
      await listenOn(server, path, () => server.listen(path))
      this.socketPath = path
      try {
        await chmod(path, 0o600)
      } catch (error) {
        server.close()
        throw wrapIoError(error, path, 'restrict the permissions of')
      }
      this.address = { kind: 'unix', path }
    } else {
      const host = target.host ?? '127.0.0.1'
      if (!Number.isInteger(target.port) || target.port < 0 || target.port > 65535) {
        throw new EngineError(
          'BAD_ARGUMENT',
          `The port ${target.port} is not between 0 and 65535.`,
          { field: 'port', value: target.port },
        )
      }
      if (!isLoopbackHost(host) && !this.tls) {
        throw new EngineError(
          'FORBIDDEN',
          `Refusing to serve on ${host} without TLS: anyone who can reach it could read and write the disk. Give a PSK file (--tls-psk-file) or certificates (--tls-creds), or bind 127.0.0.1.`,
          { field: 'host', value: host },
        )
      }
      await listenOn(server, `${host}:${target.port}`, () => server.listen(target.port, host))
      const bound = server.address()
      const port = typeof bound === 'object' && bound ? bound.port : target.port
      this.address = { kind: 'tcp', host, port }
    }
    this.server = server
    return this.address
  }

  /** The NBD URI of an export at the listening address. */
  uri(exportName = this.exports[0]!.options.name): string {
    if (!this.address) throw new EngineError('BAD_REQUEST', 'The NBD server is not listening.')
    return nbdUri(this.address, exportName, this.tls !== null)
  }

  /**
   * Stop: no new connections; connections in the handshake are closed; those in transmission
   * finish the requests in flight and then close; finally every opened disk is flushed. The
   * disks stay open (their owner closes them). Idempotent.
   */
  close(): Promise<void> {
    this.closing ??= this.closeNow()
    return this.closing
  }

  private async closeNow(): Promise<void> {
    const server = this.server
    const stopped = server
      ? new Promise<void>((done) => server.close(() => done()))
      : Promise.resolve()
    for (const connection of this.connections.keys()) connection.shutdown()
    await Promise.all(this.connections.values())
    await stopped
    if (this.socketPath) await rm(this.socketPath, { force: true }).catch(() => undefined)
    let failure: unknown = null
    for (const slot of this.exports) {
      if (!slot.resolved || slot.resolved.readOnly) continue
      try {
        await slot.resolved.disk.flush()
      } catch (error) {
        failure ??= error
      }
    }
    if (failure) throw failure
  }
}

function listenOn(server: Server, where: string, start: () => void): Promise<void> {
  return new Promise((done, fail) => {
    const onError = (error: NodeJS.ErrnoException): void => {
      const code =
        error.code === 'EADDRINUSE'
          ? 'BUSY'
          : error.code === 'EACCES'
            ? 'PERMISSION_DENIED'
            : 'IO_ERROR'
      fail(
        new EngineError(code, `Cannot listen on ${where}: ${error.message}.`, {
          field: 'address',
          value: where,
          cause: error,
        }),
      )
    }
    server.once('error', onError)
    server.once('listening', () => {
      server.off('error', onError)
      done()
    })
    start()
  })
}
