import { readFile } from 'node:fs/promises'
import { isIPv6 } from 'node:net'
import type { Socket } from 'node:net'
import tls from 'node:tls'
import { EngineError, wrapIoError } from '../engine/errors'

/** Pre-shared keys by identity (user name), as qemu's and nbdkit's PSK files hold them. */
export type PskKeys = ReadonlyMap<string, Buffer>

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

/**
 * Start a server-side TLS session on `socket` (after NBD_OPT_STARTTLS was acknowledged) using
 * the PSK of the identity the client presents. Resolves once the TLS handshake completed;
 * rejects (and destroys the socket) if it fails or an unknown identity is presented.
 */
export function startServerTls(
  socket: Socket,
  keys: PskKeys,
  leftover: Buffer,
): Promise<tls.TLSSocket> {
  if (leftover.length > 0) socket.unshift(leftover)
  const secure = new tls.TLSSocket(socket, {
    isServer: true,
    secureContext: tls.createSecureContext({ ciphers: PSK_CIPHERS, minVersion: 'TLSv1.2' }),
    pskCallback: (_socket: tls.TLSSocket, identity: string) => keys.get(identity) ?? null,
  } as tls.TLSSocketOptions)
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
