import { open as openFile, realpath, stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import type { Disk, FormatDriver, OpenOptions } from './disk'
import { EngineError, isEngineError, wrapIoError } from './errors'
import { assertFollowable, judgeName, STRICT_POLICY, type NamePolicy } from './names'
import { getDriver, listDrivers, probeDriver } from './registry'

/** Deepest chain the engine opens (the top image is depth 0). */
export const MAX_CHAIN_DEPTH = 64
/** Bytes read to probe a format. */
const PROBE_BYTES = 4096

/** How to open an image and its chain. */
export interface OpenImageOptions {
  /** The format, when known; otherwise the file is probed (raw when nothing claims it). */
  format?: string
  readOnly?: boolean
  policy?: NamePolicy
  /** Inspect only: record refused or missing names instead of failing (see OpenOptions). */
  lenient?: boolean
}

/** Read the first bytes of `path` for probing. */
export async function readHead(path: string): Promise<{ head: Buffer; length: number }> {
  let handle
  try {
    handle = await openFile(path, 'r')
    const { size } = await handle.stat()
    const head = Buffer.alloc(Math.min(PROBE_BYTES, size))
    await handle.read(head, 0, head.length, 0)
    return { head, length: size }
  } catch (error) {
    throw wrapIoError(error, path, 'read')
  } finally {
    await handle?.close()
  }
}

/** Probe the format of a file the user named (never used for names stored in images). */
export async function probeFormat(path: string): Promise<string> {
  const { head, length } = await readHead(path)
  return probeDriver(head, length).name
}

async function assertRegularFile(path: string): Promise<void> {
  let info
  try {
    info = await stat(path)
  } catch (error) {
    throw wrapIoError(error, path, 'open')
  }
  if (!info.isFile()) {
    throw new EngineError('BAD_ARGUMENT', `${path} is not a regular file.`, { path })
  }
}

async function verifyRecordedFormat(driver: FormatDriver, path: string, namingFile: string): Promise<void> {
  if (driver.name === 'raw') return
  const { head, length } = await readHead(path)
  if (driver.probe(head, length) === 0) {
    const actual = probeDriver(head, length).name
    throw new EngineError(
      'FORMAT_MISMATCH',
      `${namingFile} records ${path} as ${driver.name}, but it is not a ${driver.name} file (it looks like ${actual}).`,
      { path, field: 'format', value: driver.name },
    )
  }
}

/**
 * Open `path` and, through its drivers, its whole backing chain.
 *
 * The top file is the user's choice: it is probed when no format is given. Every name stored
 * in an image is judged by the policy, resolved against the naming file's folder, and opened
 * with the format the image records (never probed), read-only. Loops, chains deeper than
 * {@link MAX_CHAIN_DEPTH}, missing files and format mismatches are errors.
 */
export async function openImage(path: string, options: OpenImageOptions = {}): Promise<Disk> {
  const absolute = resolve(path)
  await assertRegularFile(absolute)
  const format = options.format ?? (await probeFormat(absolute))
  const driver = getDriver(format, absolute)
  if (options.format) await verifyRecordedFormat(driver, absolute, 'The command line')
  const policy = options.policy ?? STRICT_POLICY
  const lenient = options.lenient ?? false
  const top = await realpath(absolute)
  return driver.open(absolute, makeOpenOptions(new Set([top]), 0, options.readOnly ?? false, policy, lenient))
}

function makeOpenOptions(
  visited: Set<string>,
  depth: number,
  readOnly: boolean,
  policy: NamePolicy,
  lenient: boolean,
): OpenOptions {
  return {
    readOnly,
    policy,
    depth,
    visited,
    lenient,
    async judgeDataFile(namingFile, storedName, format) {
      const verdict = await judgeName(namingFile, storedName, format, policy)
      if (!verdict.followed && !lenient) assertFollowable(namingFile, 'image file', verdict)
      if (visited.has(verdict.realPath)) {
        throw new EngineError(
          'SAME_FILE',
          `The image file '${storedName}' of ${namingFile} is already used by the chain (${verdict.realPath}).`,
          { path: namingFile, field: 'image name', value: storedName },
        )
      }
      visited.add(verdict.realPath)
      return verdict
    },
    async openBacking(namingFile, storedName, backingFormat) {
      const verdict = await judgeName(namingFile, storedName, backingFormat, policy)
      if (!verdict.followed) {
        if (lenient) return null
        assertFollowable(namingFile, 'backing file', verdict)
      }
      if (visited.has(verdict.realPath)) {
        if (lenient) return null
        throw new EngineError(
          'CHAIN_LOOP',
          `The backing file '${storedName}' of ${namingFile} is already part of the chain (${verdict.realPath}); the chain loops.`,
          { path: namingFile, field: 'backing name', value: storedName },
        )
      }
      if (depth + 1 >= MAX_CHAIN_DEPTH) {
        throw new EngineError(
          'CHAIN_TOO_DEEP',
          `The backing chain of ${namingFile} is deeper than ${MAX_CHAIN_DEPTH} layers.`,
          { path: namingFile, field: 'backing name', value: storedName },
        )
      }
      const driver = recordedDriver(namingFile, storedName, backingFormat)
      await verifyRecordedFormat(driver, verdict.resolved, namingFile)
      const below = new Set(visited)
      below.add(verdict.realPath)
      // Bases are always opened read-only; commit reopens the one it writes.
      const disk = await driver.open(verdict.resolved, makeOpenOptions(below, depth + 1, true, policy, lenient))
      for (const path of below) visited.add(path)
      return disk
    },
  }
}

/** The driver for a backing format an image records, or UNSUPPORTED_FORMAT naming that image. */
function recordedDriver(namingFile: string, storedName: string, format: string): FormatDriver {
  try {
    return getDriver(format)
  } catch (error) {
    if (!isEngineError(error, 'UNSUPPORTED_FORMAT')) throw error
    const known = listDrivers()
      .map((driver) => driver.name)
      .join(', ')
    throw new EngineError(
      'UNSUPPORTED_FORMAT',
      `${namingFile} records its backing file '${storedName}' in format '${format}', which is not supported; known formats: ${known}.`,
      { path: namingFile, field: 'backing format', value: format },
    )
  }
}

/** Walk a disk's chain from the top: [disk, its backing, ...]. */
export function chainOf(disk: Disk): Disk[] {
  const chain: Disk[] = []
  for (let layer: Disk | null = disk; layer; layer = layer.backing) chain.push(layer)
  return chain
}
