import { readFile } from 'node:fs/promises'
import { isIPv6 } from 'node:net'
import { join } from 'node:path'
import type { Socket } from 'node:net'
import type tls from 'node:tls'
import { EngineError, wrapIoError } from '../engine/errors'

/** Pre-shared keys by identity (user name), as qemu's and nbdkit's PSK files hold them. */
export type PskKeys = ReadonlyMap<string, Buffer>

/**
 * X.509 credentials of a server, from a folder laid out as QEMU's tls-creds-x509 wants it
 * (ca-cert.pem, server-cert.pem, server-key.pem): what libvirt uses for NBD, and what a QEMU on
 * another host checks our certificate against.
 */
export interface X509Credentials {
  /** The folder the files came from (for messages). */
  folder: string
  /** The PEM files, already checked to load together. */
  pem: { ca: Buffer; cert: Buffer; key: Buffer }
  context: tls.SecureContext
  /** Clients must present a certificate signed by ca-cert.pem (QEMU's verify-peer=on). */
  verifyClients: boolean
}

/** How an NBD server runs TLS: pre-shared keys by identity, or X.509 certificates. */
export type TlsCredentials = { kind: 'psk'; keys: PskKeys } | ({ kind: 'x509' } & X509Credentials)

/**
 * node:tls, loaded on first use: most exports run without TLS, and loading it (OpenSSL's TLS
 * state) costs every `addcow serve` several MB of memory.
 */
function tlsModule(): typeof tls {
  return process.getBuiltinModule('node:tls')
}

/** The files of a tls-creds-x509 folder the server needs (QEMU's names). */
export const X509_SERVER_FILES = ['ca-cert.pem', 'server-cert.pem', 'server-key.pem'] as const

/** Largest certificate or key file read (a long chain is a few KiB). */
const MAX_PEM_FILE_BYTES = 1024 * 1024

/** Largest PSK file read (a few keys; anything bigger is not a key file). */
const MAX_PSK_FILE_BYTES = 64 * 1024
/** OpenSSL cipher list: PSK suites only (TLS 1.2), and TLS 1.3 suites which use the PSK too. */
const PSK_CIPHERS = 'PSK'

/**
 * Parse a PSK file: one `identity:hexkey` per line (qemu's keys.psk and nbdkit's --tls-psk
 * format). Blank lines are skipped; anything else malformed is an error naming the line.
 */
export function parsePskFile(text: string, path: string): Map<string, Buffer> {
  const keys = new Map<string, Buffer>()
  const lines = text.split(/\r?\n/)
  lines.forEach((line, index) => {
    if (line.trim() === '') return
    const colon = line.indexOf(':')
    const identity = colon > 0 ? line.slice(0, colon) : ''
    const hex = colon > 0 ? line.slice(colon + 1).trim() : ''
    if (identity === '' || !/^(?:[0-9a-fA-F]{2})+$/.test(hex)) {
      throw new EngineError(
        'BAD_ARGUMENT',
        `Line ${index + 1} of the PSK file ${path} is not 'identity:hexkey'.`,
        { path, field: 'psk line', value: index + 1 },
      )
    }
    keys.set(identity, Buffer.from(hex, 'hex'))
  })
  if (keys.size === 0) {
    throw new EngineError('BAD_ARGUMENT', `The PSK file ${path} holds no keys.`, {
      path,
      field: 'psk file',
    })
  }
  return keys
}

/** Read and parse a PSK file (see {@link parsePskFile}). */
export async function readPskFile(path: string): Promise<Map<string, Buffer>> {
  let text: string
  try {
    const data = await readFile(path)
    if (data.length > MAX_PSK_FILE_BYTES) {
      throw new EngineError(
        'SIZE_LIMIT',
        `The PSK file ${path} is larger than ${MAX_PSK_FILE_BYTES} bytes.`,
        {
          path,
          field: 'psk file',
          value: data.length,
        },
      )
    }
    text = data.toString('utf8')
  } catch (error) {
    throw wrapIoError(error, path, 'read the PSK file')
  }
  return parsePskFile(text, path)
}

async function readPemFile(path: string): Promise<Buffer> {
  try {
    const data = await readFile(path)
    if (data.length > MAX_PEM_FILE_BYTES) {
      throw new EngineError(
        'SIZE_LIMIT',
        `The TLS file ${path} is larger than ${MAX_PEM_FILE_BYTES} bytes; it is not a certificate or key.`,
        { path, field: 'tls file', value: data.length },
      )
    }
    return data
  } catch (error) {
    throw wrapIoError(error, path, 'read the TLS file')
  }
}

/**
 * Read a tls-creds-x509 folder for a server: its CA, certificate and key must load and match
 * (a key of another certificate is an error naming the folder, before anyone connects).
 */
export async function readX509Folder(
  folder: string,
  options: { verifyClients?: boolean } = {},
): Promise<{ kind: 'x509' } & X509Credentials> {
  const [caFile, certFile, keyFile] = X509_SERVER_FILES
  // Read together, reported in the files' order: with several missing, the error always names
  // the first (Promise.all would name whichever read failed first).
  const reads = await Promise.allSettled([
    readPemFile(join(folder, caFile)),
    readPemFile(join(folder, certFile)),
    readPemFile(join(folder, keyFile)),
  ])
  const failed = reads.find((read) => read.status === 'rejected')
  if (failed) throw failed.reason
  const [ca, cert, key] = reads.map((read) => (read as PromiseFulfilledResult<Buffer>).value) as [
    Buffer,
    Buffer,
    Buffer,
  ]
  let context: tls.SecureContext
  try {
    context = tlsModule().createSecureContext({ ca, cert, key, minVersion: 'TLSv1.2' })
  } catch (error) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `The TLS certificates in ${folder} cannot be used (${X509_SERVER_FILES.join(', ')}): ${(error as Error).message}.`,
      { path: folder, field: 'tls-creds', cause: error },
    )
  }
  return {
    kind: 'x509',
    folder,
    pem: { ca, cert, key },
    context,
    verifyClients: options.verifyClients ?? false,
  }
}

function serverTlsOptions(credentials: TlsCredentials): tls.TLSSocketOptions {
  if (credentials.kind === 'psk') {
    const keys = credentials.keys
    return {
      isServer: true,
      secureContext: tlsModule().createSecureContext({
        ciphers: PSK_CIPHERS,
        minVersion: 'TLSv1.2',
      }),
      pskCallback: (_socket: tls.TLSSocket, identity: string) => keys.get(identity) ?? null,
    } as tls.TLSSocketOptions
  }
  return { isServer: true, secureContext: credentials.context }
}

/**
 * TLS that checks the client's certificate against our CA. Node decides `authorized` only for
 * sockets a tls.Server accepted, so a server of our own (never listening) takes this one
 * connection: it refuses a client without a certificate our CA signed by closing it.
 */
function startVerifiedTls(socket: Socket, credentials: X509Credentials): Promise<tls.TLSSocket> {
  const server = tlsModule().createServer({
    ...credentials.pem,
    minVersion: 'TLSv1.2',
    requestCert: true,
    rejectUnauthorized: true,
  })
  return new Promise((resolve, reject) => {
    const onClose = (): void =>
      fail(new Error('the client presented no certificate signed by the CA of this export'))
    const fail = (error: Error): void => {
      socket.off('close', onClose)
      socket.destroy()
      reject(error)
    }
    server.once('secureConnection', (secure: tls.TLSSocket) => {
      socket.off('close', onClose)
      resolve(secure)
    })
    server.once('tlsClientError', (error: Error) => fail(error))
    socket.once('close', onClose)
    server.emit('connection', socket)
  })
}

/**
 * Start a server-side TLS session on `socket` (after NBD_OPT_STARTTLS was acknowledged): with
 * the PSK of the identity the client presents, or with our X.509 certificate (and the client's
 * checked against our CA when asked). Resolves once the TLS handshake completed; rejects (and
 * destroys the socket) if it fails, an unknown identity or an unverified client certificate is
 * presented.
 */
export function startServerTls(
  socket: Socket,
  credentials: TlsCredentials,
  leftover: Buffer,
): Promise<tls.TLSSocket> {
  if (leftover.length > 0) socket.unshift(leftover)
  if (credentials.kind === 'x509' && credentials.verifyClients)
    return startVerifiedTls(socket, credentials)
  const { TLSSocket } = tlsModule()
  const secure = new TLSSocket(socket, serverTlsOptions(credentials))
  return new Promise((resolve, reject) => {
    const onClose = (): void => fail(new Error('The connection closed during the TLS handshake.'))
    const fail = (error: Error): void => {
      secure.off('error', fail)
      secure.off('close', onClose)
      secure.destroy()
      reject(error)
    }
    secure.once('secure', () => {
      secure.off('error', fail)
      secure.off('close', onClose)
      resolve(secure)
    })
    secure.once('error', fail)
    secure.once('close', onClose)
  })
}

/** Whether `host` names the loopback interface (where TLS is not required). */
export function isLoopbackHost(host: string): boolean {
  if (host === 'localhost') return true
  if (isIPv6(host))
    return host === '::1' || /^(0*:)*:?0*1$/.test(host) || host.startsWith('::ffff:127.')
  return /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host)
}
