import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { imageTag } from '../engine/unix-socket'

/**
 * The Unix socket `addcow serve IMAGE` listens on when no address is given, and the one
 * `addcow qemu-cmd --via nbd IMAGE` points QEMU at: in $XDG_RUNTIME_DIR (private to the user)
 * or the temporary folder, named after the image and a hash of its absolute path, so two
 * images never share a socket and the name stays well under the OS's socket path limit.
 */
export function defaultSocketPath(image: string): string {
  const folder = process.env.XDG_RUNTIME_DIR || tmpdir()
  return join(folder, `addcow-${imageTag(image)}.sock`)
}
