import { createHash } from 'node:crypto'
import { lstat, rm } from 'node:fs/promises'
import { connect } from 'node:net'
import { basename, resolve } from 'node:path'
import { EngineError } from './errors'

/** Longest Unix socket path the OS accepts (sun_path is 108 bytes on Linux, 104 on macOS). */
export const MAX_SOCKET_PATH = process.platform === 'linux' ? 107 : 103

/**
 * A short name for the per-image sockets and folders (the default NBD socket, the control
 * socket, a VM's run folder): the image's file name (40 safe characters at most) and a hash of
 * its absolute path, so two images never share one and paths stay under {@link MAX_SOCKET_PATH}.
 */
export function imageTag(image: string): string {
  const absolute = resolve(image)
  const hash = createHash('sha256').update(absolute).digest('hex').slice(0, 12)
  const stem = basename(absolute)
    .replace(/[^A-Za-z0-9._-]/g, '_')
    .slice(0, 40)
  return `${stem}-${hash}`
}

/** BAD_ARGUMENT naming `path` when it is too long to bind (`what`: "socket", "control socket"). */
export function assertSocketPathFits(path: string, what: string): void {
  if (Buffer.byteLength(path) > MAX_SOCKET_PATH) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `The ${what} path ${path} is longer than ${MAX_SOCKET_PATH} bytes; choose a shorter one.`,
      { path, field: what },
    )
  }
}

/**
 * Remove a Unix socket left by a dead server before listening on its path; refuse a live socket
 * (another server: BUSY) or any other file (ALREADY_EXISTS).
 */
export async function clearStaleSocket(path: string, what: string): Promise<void> {
  let info
  try {
    info = await lstat(path)
  } catch {
    return
  }
  if (!info.isSocket()) {
    throw new EngineError(
      'ALREADY_EXISTS',
      `${path} exists and is not a socket; refusing to replace it.`,
      { path, field: what },
    )
  }
  const live = await new Promise<boolean>((done) => {
    const probe = connect(path)
    probe.once('connect', () => {
      probe.destroy()
      done(true)
    })
    probe.once('error', () => done(false))
  })
  if (live) {
    throw new EngineError('BUSY', `Another server is listening on ${path}.`, {
      path,
      field: what,
    })
  }
  await rm(path, { force: true })
}
