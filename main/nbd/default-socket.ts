import { createHash } from 'node:crypto'
import { tmpdir } from 'node:os'
import { basename, join, resolve } from 'node:path'

/**
 * The Unix socket `addcow serve IMAGE` listens on when no address is given, and the one
 * `addcow qemu-cmd --via nbd IMAGE` points QEMU at: in $XDG_RUNTIME_DIR (private to the user)
 * or the temporary folder, named after the image and a hash of its absolute path, so two
 * images never share a socket and the name stays well under the OS's socket path limit.
 */
export function defaultSocketPath(image: string): string {
  const absolute = resolve(image)
  const hash = createHash('sha256').update(absolute).digest('hex').slice(0, 12)
  const stem = basename(absolute)
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .slice(0, 40)
  const folder = process.env.XDG_RUNTIME_DIR || tmpdir()
  return join(folder, `addcow-${stem}-${hash}.sock`)
}
