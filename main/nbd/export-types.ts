import type { Disk } from '../engine/disk'
import type { BufferPool } from './buffer-pool'
import type { TlsCredentials } from './tls'

/** One export a server offers: a name and the disk behind it. */
export interface NbdExportOptions {
  /** Export name clients ask for ('' is the default export). */
  name: string
  /** Text for people, sent with NBD_OPT_LIST and NBD_INFO_DESCRIPTION. */
  description?: string
  /**
   * The disk, or a factory called once, on the first client that selects the export. Every
   * connection shares that one Disk object (see README.md, "Multi-conn").
   */
  disk: Disk | (() => Promise<Disk>)
  /** Serve read-only even if the disk is writable. */
  readOnly?: boolean
}

/** An export whose disk is open. */
export interface ResolvedExport {
  name: string
  description: string
  disk: Disk
  readOnly: boolean
}

/**
 * Bounds that keep a hostile or broken client from using unbounded memory or time (README.md,
 * "Hostile clients and limits", says what they add up to).
 */
export interface NbdLimits {
  /** Largest READ/WRITE payload (advertised as the maximum block size). */
  maxBlockSize: number
  /** Largest option data buffered during the handshake; bigger options end the connection. */
  maxOptionData: number
  /** Options one connection may send before it must enter transmission. */
  maxOptions: number
  /** Requests one connection may have in flight before the server stops reading its socket. */
  maxInFlight: number
  /**
   * Bytes one connection may hold (write payloads being applied, read replies its socket has
   * not taken yet) before the server stops reading its requests; resumes as the socket drains.
   */
  maxConnectionBytes: number
  /**
   * The same across all connections. Each connection may always hold this divided by the
   * server's connection limit, so no client waits on another's memory; beyond that, up to its
   * share of what is free (this divided by the connections open, at most `maxConnectionBytes`).
   */
  maxServerBytes: number
  /** Time allowed from connect to the end of the handshake. */
  handshakeTimeoutMs: number
  /**
   * Time a connection whose requests ended (the client sent NBD_CMD_DISC or half-closed, or the
   * server is closing) has to take its last replies before the server cuts it.
   */
  closeTimeoutMs: number
}

/** Defaults for {@link NbdLimits}: 32 MiB blocks as proto.md recommends for interoperability. */
export const DEFAULT_LIMITS: NbdLimits = {
  maxBlockSize: 32 * 1024 * 1024,
  maxOptionData: 64 * 1024,
  maxOptions: 4096,
  maxInFlight: 64,
  maxConnectionBytes: 16 * 1024 * 1024,
  maxServerBytes: 64 * 1024 * 1024,
  handshakeTimeoutMs: 30_000,
  closeTimeoutMs: 10_000,
}

/** A server log line: protocol violations and I/O errors the operator may want to see. */
export interface NbdLogEvent {
  level: 'info' | 'warn' | 'error'
  /** Connection number (1, 2, ...), or 0 for the server itself. */
  connection: number
  message: string
}

/** What a connection asks of its server. */
export interface ConnectionHost {
  readonly limits: NbdLimits
  readonly tls: TlsCredentials | null
  readonly shuttingDown: boolean
  /** Buffers shared by every connection for replies and payloads. */
  readonly pool: BufferPool
  /** Whether a connection that holds `held` bytes may take more (read requests, read pieces). */
  hasRoom(held: number): boolean
  /** A connection's held bytes changed by `delta` (the server keeps the total). */
  account(delta: number): void
  listExports(): { name: string; description: string }[]
  /** The export for a name ('' = default), null when unknown; throws when it cannot be opened. */
  resolveExport(name: string): Promise<ResolvedExport | null>
  log(event: NbdLogEvent): void
}
