import { EngineError } from '../../engine/errors'
import { formatSize } from '../../engine/units'
import { defaultControlPath } from '../../engine/live/control'
import { defaultSocketPath } from '../../nbd/default-socket'
import type { NbdListenTarget } from '../../nbd/server'
import { startExport } from '../../nbd/start-export'
import { defineCommand, untilCancelled, type CommandContext } from '../command'
import {
  ACCEPT_BASE_OPTION,
  ACCEPT_BASE_USAGE,
  baseDriftCheck,
  FORMAT_OPTION,
  NAME_POLICY_OPTIONS,
  NAME_POLICY_USAGE,
  NBD_PORT,
  parsePort,
  policyFrom,
} from '../options'

function listenTarget(
  image: string,
  values: { socket?: string; host?: string; port?: string },
): NbdListenTarget {
  if (values.socket !== undefined && (values.host !== undefined || values.port !== undefined)) {
    throw new EngineError(
      'BAD_ARGUMENT',
      'addcow serve takes either --socket or --host/--port, not both.',
    )
  }
  if (values.socket !== undefined) return { socket: values.socket }
  if (values.host !== undefined || values.port !== undefined) {
    return {
      host: values.host ?? '127.0.0.1',
      port: values.port !== undefined ? parsePort(values.port) : NBD_PORT,
    }
  }
  return { socket: defaultSocketPath(image) }
}

function log(
  context: CommandContext,
): (event: { level: string; connection: number; message: string }) => void {
  return (event) => {
    if (event.level === 'info') return
    const where = event.connection > 0 ? `client ${event.connection}: ` : ''
    context.stderr.write(`addcow serve: ${where}${event.message}\n`)
  }
}

/** `addcow serve`: an NBD export of an image's guest view, until SIGINT or SIGTERM. */
export const serveCommand = defineCommand({
  name: 'serve',
  summary: "serve an image's guest view over NBD",
  usage: `addcow serve [--socket PATH | --host H --port N] [--export NAME] [--read-only]
             [--copy-on-read] [--control-socket PATH] IMAGE

  --socket PATH        listen on a Unix socket (default: a per-image socket in
                       $XDG_RUNTIME_DIR or the temporary folder)
  --host H             listen on TCP at H (default 127.0.0.1); a host other than
                       loopback needs --tls-psk-file or --tls-creds
  --port N             TCP port (default ${NBD_PORT}; 0 picks a free one)
  --export NAME        export name (default: empty, the default export)
  --read-only          refuse writes
  --copy-on-read       copy what clients read from the base into the overlay, so a
                       slow or remote base warms it (as QEMU's copy-on-read)
  --tls-psk-file FILE  require TLS with the pre-shared keys in FILE (identity:hexkey
                       lines, as qemu's keys.psk and nbdkit's --tls-psk)
  --tls-creds DIR      require TLS with X.509 certificates from DIR, laid out as
                       QEMU's tls-creds-x509: ca-cert.pem, server-cert.pem,
                       server-key.pem (QEMU on another host connects with
                       -object tls-creds-x509,endpoint=client and the same CA)
  --tls-verify-clients clients must present a certificate signed by the
                       ca-cert.pem of --tls-creds DIR
  --max-connections N  clients served at once (default 64)
  --control-socket PATH
                       take live commands (addcow job: snapshot, status, cancel) on
                       this Unix socket (default: a per-image socket in a private
                       folder of $XDG_RUNTIME_DIR or the temporary folder)
  -f FMT               format of IMAGE (default: probed)
${ACCEPT_BASE_USAGE}
${NAME_POLICY_USAGE}

Prints the NBD URI to connect to and the control socket, then serves until SIGINT
or SIGTERM, flushing everything before it exits.`,
  options: {
    socket: { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    export: { type: 'string' },
    'read-only': { type: 'boolean' },
    'copy-on-read': { type: 'boolean' },
    'tls-psk-file': { type: 'string' },
    'tls-creds': { type: 'string' },
    'tls-verify-clients': { type: 'boolean' },
    'max-connections': { type: 'string' },
    'control-socket': { type: 'string' },
    ...FORMAT_OPTION,
    ...ACCEPT_BASE_OPTION,
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 1, max: 1, names: 'one IMAGE' },
  async run({ values, positionals }, context) {
    const image = positionals[0]!
    let maxConnections: number | undefined
    if (values['max-connections'] !== undefined) {
      maxConnections = Number(values['max-connections'])
      if (!Number.isInteger(maxConnections) || maxConnections < 1 || maxConnections > 4096) {
        throw new EngineError(
          'BAD_ARGUMENT',
          `--max-connections '${values['max-connections']}' is not a number between 1 and 4096.`,
          {
            field: 'max-connections',
            value: values['max-connections'],
          },
        )
      }
    }
    if (values['tls-verify-clients'] && values['tls-creds'] === undefined) {
      throw new EngineError('BAD_ARGUMENT', '--tls-verify-clients goes with --tls-creds DIR.', {
        field: 'tls-verify-clients',
      })
    }
    const handle = await startExport({
      image,
      readOnly: values['read-only'] ?? false,
      copyOnRead: values['copy-on-read'] ?? false,
      library: context.library,
      policy: await policyFrom(context, values),
      exportName: values.export ?? '',
      listen: listenTarget(image, values),
      checks: [baseDriftCheck(context, 'serve', values['accept-base'] ?? false)],
      onLog: log(context),
      signal: context.signal,
      controlSocket: values['control-socket'] ?? defaultControlPath(image),
      controlOptional: values['control-socket'] === undefined,
      ...(values.f ? { format: values.f } : {}),
      ...(values['tls-psk-file'] ? { tlsPskFile: values['tls-psk-file'] } : {}),
      ...(values['tls-creds'] !== undefined
        ? {
            tlsCertificates: {
              folder: values['tls-creds'],
              verifyClients: values['tls-verify-clients'] ?? false,
            },
          }
        : {}),
      ...(maxConnections !== undefined ? { maxConnections } : {}),
    })
    context.stdout.write(`${handle.uri}\n`)
    for (const warning of handle.warnings)
      context.stderr.write(`addcow serve: warning: ${warning}\n`)
    const mode = handle.disk.readOnly || values['read-only'] ? 'read-only' : 'read-write'
    context.stderr.write(
      `addcow serve: serving ${handle.disk.path} (${handle.disk.format}, ${formatSize(handle.disk.size)}, ${mode}${handle.live.copyOnRead ? ', copy-on-read' : ''}${handle.tls ? ', TLS' : ''}); stop with Ctrl-C.\n`,
    )
    if (handle.control)
      context.stderr.write(
        `addcow serve: live commands on ${handle.control.path} (addcow job status --control-socket ${handle.control.path}).\n`,
      )
    await untilCancelled(context.signal)
    context.stderr.write('addcow serve: stopping; flushing the image.\n')
    await handle.stop()
    if (handle.live.swapCount > 0)
      context.stderr.write(
        `addcow serve: live snapshots moved the top: serve ${handle.live.current.path} to go on from here.\n`,
      )
    return 0
  },
})
