/**
 * The NBD export: a server for the NBD protocol over any engine disk, and startExport() which
 * opens an image's chain and serves it (README.md in this folder says what is implemented).
 */
export * from './export-types'
export * from './protocol'
export { NbdServer, type NbdListenTarget, type NbdServerOptions } from './server'
export { startExport, type ExportHandle, type StartExportOptions } from './start-export'
export {
  isLoopbackHost,
  parsePskFile,
  readPskFile,
  readX509Folder,
  type PskKeys,
  type TlsCredentials,
  type X509Credentials,
} from './tls'
export { nbdUri, type NbdAddress } from './uri'
export { defaultSocketPath } from './default-socket'
