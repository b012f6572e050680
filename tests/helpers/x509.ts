// X.509 certificates made with openssl for the TLS tests, in the folder layout QEMU's
// tls-creds-x509 (and libnbd's tls-certificates) read: ca-cert.pem, server-cert.pem,
// server-key.pem for a server; ca-cert.pem, client-cert.pem, client-key.pem for a client.
import { copyFile, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { tool } from './tools'

/** The folders a test uses. */
export interface X509Folders {
  /** The export's: ca-cert.pem, server-cert.pem, server-key.pem. */
  server: string
  /** A client trusting our CA, with a client certificate it signed. */
  client: string
  /** A client trusting our CA, without a client certificate. */
  clientWithoutCertificate: string
  /** A client trusting another CA (it must refuse our export). */
  otherCa: string
}

async function makeCa(folder: string, name: string): Promise<void> {
  await tool('openssl', [
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    `/CN=${name}`,
    '-keyout',
    join(folder, `${name}-key.pem`),
    '-out',
    join(folder, `${name}-cert.pem`),
  ])
}

/** A key and a certificate signed by the CA `ca` in `folder`, with extensions `extensions`. */
async function makeSigned(
  folder: string,
  ca: string,
  name: string,
  extensions: string,
): Promise<void> {
  const key = join(folder, `${name}-key.pem`)
  const request = join(folder, `${name}.csr`)
  await tool('openssl', [
    'req',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-subj',
    `/CN=${name}`,
    '-keyout',
    key,
    '-out',
    request,
  ])
  const extensionFile = join(folder, `${name}.ext`)
  await tool('sh', ['-c', `printf '%s\\n' "$1" > "$2"`, 'sh', extensions, extensionFile])
  await tool('openssl', [
    'x509',
    '-req',
    '-in',
    request,
    '-CA',
    join(folder, `${ca}-cert.pem`),
    '-CAkey',
    join(folder, `${ca}-key.pem`),
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    extensionFile,
    '-out',
    join(folder, `${name}-cert.pem`),
  ])
}

/**
 * A CA, a server certificate for 127.0.0.1 and localhost, a client certificate, and an
 * unrelated CA, laid out in the four folders of {@link X509Folders} under `root`.
 */
export async function makeX509Folders(root: string): Promise<X509Folders> {
  const work = join(root, 'pki')
  await mkdir(work, { recursive: true })
  await makeCa(work, 'ca')
  await makeCa(work, 'other-ca')
  await makeSigned(
    work,
    'ca',
    'server',
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment',
  )
  await makeSigned(
    work,
    'ca',
    'client',
    'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment',
  )
  const folders: X509Folders = {
    server: join(root, 'server'),
    client: join(root, 'client'),
    clientWithoutCertificate: join(root, 'client-no-cert'),
    otherCa: join(root, 'other-ca'),
  }
  const place = async (folder: string, files: [string, string][]): Promise<void> => {
    await mkdir(folder, { recursive: true })
    for (const [from, to] of files) await copyFile(join(work, from), join(folder, to))
  }
  await place(folders.server, [
    ['ca-cert.pem', 'ca-cert.pem'],
    ['server-cert.pem', 'server-cert.pem'],
    ['server-key.pem', 'server-key.pem'],
  ])
  await place(folders.client, [
    ['ca-cert.pem', 'ca-cert.pem'],
    ['client-cert.pem', 'client-cert.pem'],
    ['client-key.pem', 'client-key.pem'],
  ])
  await place(folders.clientWithoutCertificate, [['ca-cert.pem', 'ca-cert.pem']])
  await place(folders.otherCa, [['other-ca-cert.pem', 'ca-cert.pem']])
  return folders
}
