/** Where a server listens. */
export type NbdAddress =
  { kind: 'unix'; path: string } | { kind: 'tcp'; host: string; port: number }

/** Percent-encode everything except RFC 3986 unreserved characters and those in `keep`. */
function encodePart(text: string, keep: string): string {
  let result = ''
  for (const byte of Buffer.from(text, 'utf8')) {
    const char = String.fromCharCode(byte)
    if (/[A-Za-z0-9\-._~]/.test(char) || keep.includes(char)) result += char
    else result += '%' + byte.toString(16).toUpperCase().padStart(2, '0')
  }
  return result
}

/**
 * The NBD URI (the NBD project's doc/uri.md, as libnbd and QEMU read it) for an export at an
 * address: `nbd+unix:///NAME?socket=PATH`, `nbd://HOST:PORT/NAME`, and `nbds...` with TLS.
 */
export function nbdUri(address: NbdAddress, exportName: string, tls: boolean): string {
  const scheme = tls ? 'nbds' : 'nbd'
  const name = encodePart(exportName, '')
  if (address.kind === 'unix')
    return `${scheme}+unix:///${name}?socket=${encodePart(address.path, '/')}`
  const host = address.host.includes(':') ? `[${address.host}]` : address.host
  return `${scheme}://${host}:${address.port}/${name}`
}
