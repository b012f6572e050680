// Shared by the NBD attack tests: seeds, an image to attack, `addcow serve` as a child, and
// the child's memory from /proc.
import { readFileSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect } from 'vitest'
import { createOverlay } from '../../../main/engine/ops/create'
import { basePattern } from '../../helpers/nbd/fixtures'
export { attackSeed } from '../../helpers/nbd/fixtures'
import { toolStatus } from '../../helpers/tools'
import { startServe, type ServeProcess } from './serve-process'

export const MIB = 1024 * 1024

/** An add-cow overlay of `size` bytes over a raw base of `baseSize` bytes of basePattern(). */
export async function attackImage(
  folder: string,
  name: string,
  size: number,
  baseSize: number,
): Promise<{ dir: string; overlay: string }> {
  const dir = join(folder, name)
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'base.raw'), basePattern(0, baseSize))
  const overlay = join(dir, 'overlay.add-cow')
  await createOverlay({
    overlay,
    backing: 'base.raw',
    backingFormat: 'raw',
    size,
    clusterSize: 65536,
  })
  return { dir, overlay }
}

/** Servers started by serveChild and not yet exited. */
const children = new Set<ServeProcess>()

/** SIGKILL every server serveChild started that still runs (for afterAll, after a timeout). */
export async function killChildren(): Promise<void> {
  await Promise.all([...children].map((child) => child.stop('SIGKILL')))
}

/** `addcow serve` of `overlay` on a Unix socket in its folder. */
export async function serveChild(
  dir: string,
  overlay: string,
  extra: string[] = [],
): Promise<ServeProcess & { socket: string }> {
  const socket = join(dir, 'serve.sock')
  const served = await startServe(['--socket', socket, ...extra, overlay], {
    dataDir: join(dir, 'data'),
  })
  children.add(served)
  served.child.once('exit', () => children.delete(served))
  return { ...served, socket }
}

/** Resident and peak resident memory of process `pid`, in bytes. */
export function memoryOf(pid: number): { rss: number; peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name: string): number =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024
  return { rss: field('VmRSS'), peak: field('VmHWM') }
}

/** Run qemu-io `commands` (write and read -P ...) on `uri`; every one must pass its check. */
export async function qemuIoVerified(uri: string, commands: string[]): Promise<void> {
  const result = await toolStatus('qemu-io', [
    '-f',
    'raw',
    ...commands.flatMap((command) => ['-c', command]),
    uri,
  ])
  expect(result.code, result.stderr + result.stdout).toBe(0)
  expect(result.stdout + result.stderr).not.toMatch(/Pattern verification failed|error/i)
}
