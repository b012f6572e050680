import type { Disk } from '../engine/disk'
import { EngineError, throwIfAborted } from '../engine/errors'
import type { Library } from '../engine/library'
import type { NamePolicy } from '../engine/names'
import { guardProbedFirstSector, openImage, probeNote } from '../engine/open'
import { startControlServer, type ControlServer } from '../engine/live/control'
import { LiveJobTable } from '../engine/live/jobs'
import { LiveDisk } from '../engine/live/live-disk'
import { LiveLocks } from '../engine/live/live-locks'
import type { LiveTarget } from '../engine/live/registry'
import type { NbdLimits, NbdLogEvent } from './export-types'
import { NbdServer, type NbdListenTarget } from './server'
import { readPskFile, readX509Folder, type PskKeys, type TlsCredentials } from './tls'
import type { NbdAddress } from './uri'

/** What {@link startExport} serves and where. */
export interface StartExportOptions {
  /** The image the user named (its chain is opened with `policy`). */
  image: string
  /** Its format; probed when absent (the user named the file). */
  format?: string
  readOnly?: boolean
  policy?: NamePolicy
  /**
   * The library live commands consult (a live commit's blast radius and fingerprints) and live
   * snapshots record their new tops in (the CLI's and the app's library).
   */
  library?: Library
  /** Export name ('' by default, so `nbd+unix:///?socket=...` works). */
  exportName?: string
  listen: NbdListenTarget
  /** Pre-shared keys, or a qemu/nbdkit PSK file to read them from; either makes TLS mandatory. */
  tlsKeys?: PskKeys
  tlsPskFile?: string
  /** A tls-creds-x509 folder (ca-cert.pem, server-cert.pem, server-key.pem): TLS with X.509. */
  tlsCertificates?: { folder: string; verifyClients?: boolean }
  maxConnections?: number
  limits?: Partial<NbdLimits>
  onLog?: (event: NbdLogEvent) => void
  /**
   * Checks run on the opened disk before any client is served (the drift guard); a throw
   * closes the disk and fails the start.
   */
  checks?: ((disk: Disk) => Promise<void>)[]
  /**
   * Listen for live commands (status, jobs, snapshot, ...) on this Unix socket (mode 0600; see
   * main/engine/live/README.md); none when absent.
   */
  controlSocket?: string
  /**
   * The control socket is a default, not the user's choice: when it cannot be had (another
   * export of the same image listens there), say so through `onLog` and serve without one.
   */
  controlOptional?: boolean
  /**
   * Copy what clients read from below the top into it (issue 17 item 4): a slow or remote base
   * warms the overlay. Needs a writable export.
   */
  copyOnRead?: boolean
  signal?: AbortSignal
}

/** A running export: its address and URI, and how to stop it. */
export interface ExportHandle {
  readonly uri: string
  readonly address: NbdAddress
  /** The disk served: {@link live} (its top may change under a live operation). */
  readonly disk: Disk
  /** What the export serves; live operations quiesce it and swap its top. */
  readonly live: LiveDisk
  /** What live operations work on: the live disk, the chain's locks, the jobs, the policy. */
  readonly target: LiveTarget
  /** The control socket, when one was asked for. */
  readonly control: ControlServer | null
  readonly server: NbdServer
  readonly tls: boolean
  /** What the user should know about the export (a probed raw image and its guarded first sector). */
  readonly warnings: readonly string[]
  /** Stop serving (requests in flight finish), flush and close the disk and its chain. Idempotent. */
  stop(): Promise<void>
}

/** The TLS the export requires: PSK or X.509, never both (null: none). */
async function tlsCredentialsOf(options: StartExportOptions): Promise<TlsCredentials | null> {
  const psk = options.tlsKeys ?? (options.tlsPskFile ? await readPskFile(options.tlsPskFile) : null)
  if (psk && options.tlsCertificates) {
    throw new EngineError(
      'BAD_ARGUMENT',
      'An export uses pre-shared keys or X.509 certificates for TLS, not both.',
      { field: 'tls' },
    )
  }
  if (psk) return { kind: 'psk', keys: psk }
  if (options.tlsCertificates) {
    return readX509Folder(options.tlsCertificates.folder, {
      verifyClients: options.tlsCertificates.verifyClients ?? false,
    })
  }
  return null
}

/**
 * Open an image's chain under the name policy and serve its guest view over NBD: the
 * engine-level entry point of `addcow serve`, `addcow launch` and the app's serve job.
 */
export async function startExport(options: StartExportOptions): Promise<ExportHandle> {
  const tlsCredentials = await tlsCredentialsOf(options)
  throwIfAborted(options.signal, 'export')
  if (options.copyOnRead && options.readOnly) {
    throw new EngineError(
      'BAD_ARGUMENT',
      'Copy-on-read writes what it reads into the image; it cannot go with a read-only export.',
      { field: 'copy-on-read' },
    )
  }
  // A probed raw image is served as QEMU serves one: with a warning, and its first sector
  // guarded against writes that would make it look like another format.
  const note = options.format === undefined ? await probeNote(options.image) : null
  const warnings = note
    ? [
        `${note.message} Its format was probed: writes that would put another format's header in its first sector are refused; give the format (-f raw) to allow them.`,
      ]
    : []
  const opened = await openImage(options.image, {
    readOnly: options.readOnly ?? false,
    ...(options.format ? { format: options.format } : {}),
    ...(options.policy ? { policy: options.policy } : {}),
  })
  const live = new LiveDisk(note && !opened.readOnly ? guardProbedFirstSector(opened) : opened)
  const disk: Disk = live
  live.copyOnRead = options.copyOnRead ?? false
  let server: NbdServer | null = null
  let locks: LiveLocks | null = null
  let control: ControlServer | null = null
  try {
    // Two writers on one overlay would corrupt its bitmap: hold the chain's files for as long
    // as the export runs (QEMU's lock bytes, so a VM or qemu-img on the same files is refused).
    locks = await LiveLocks.lock(disk, 'serve it')
    for (const check of options.checks ?? []) await check(live.current)
    throwIfAborted(options.signal, 'export')
    const exportName = options.exportName ?? ''
    server = new NbdServer({
      exports: [
        {
          name: exportName,
          description: `${disk.format} image ${disk.path}`,
          disk,
          readOnly: options.readOnly ?? false,
        },
      ],
      tls: tlsCredentials,
      ...(options.limits ? { limits: options.limits } : {}),
      ...(options.maxConnections !== undefined ? { maxConnections: options.maxConnections } : {}),
    })
    if (options.onLog) server.on('log', options.onLog)
    const address = await server.listen(options.listen)
    const target: LiveTarget = {
      live,
      locks,
      jobs: new LiveJobTable(),
      uri: server.uri(exportName),
      copyOnRead: live.copyOnRead,
      ...(options.library ? { library: options.library } : {}),
      ...(options.policy ? { policy: options.policy } : {}),
    }
    if (options.controlSocket !== undefined)
      control = await startControlServer(options.controlSocket, target).catch((error: unknown) => {
        if (!options.controlOptional) throw error
        options.onLog?.({
          level: 'warn',
          connection: 0,
          message: `no control socket (live snapshots are off): ${error instanceof Error ? error.message : String(error)}`,
        })
        return null
      })
    const running = server
    const held = locks
    const controlling = control
    let stopping: Promise<void> | null = null
    return {
      uri: target.uri!,
      address,
      disk,
      live,
      target,
      control,
      server,
      tls: tlsCredentials !== null,
      warnings,
      stop() {
        stopping ??= (async () => {
          let failure: unknown = null
          await controlling?.close().catch(() => undefined)
          await target.jobs.cancelAll()
          await running.close().catch((error: unknown) => (failure = error))
          await disk.close().catch((error: unknown) => (failure ??= error))
          await held.release().catch((error: unknown) => (failure ??= error))
          if (failure) throw failure
        })()
        return stopping
      },
    }
  } catch (error) {
    await control?.close().catch(() => undefined)
    await server?.close().catch(() => undefined)
    await disk.close().catch(() => undefined)
    await locks?.release().catch(() => undefined)
    throw error
  }
}
