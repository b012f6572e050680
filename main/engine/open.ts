import { open as openFile, realpath, stat } from 'node:fs/promises'
import { resolve } from 'node:path'
import {
  layerFiles,
  type Disk,
  type FormatDescription,
  type OpenOptions,
  type WriteOptions,
} from './disk'
import { bounded, EngineError, isEngineError, quote, wrapIoError } from './errors'
import { assertFollowable, judgeName, STRICT_POLICY, type NamePolicy } from './names'
import { getFormat, listFormats, loadDriver, probeHead, type FormatEntry } from './registry'

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
  /**
   * An open disk to use as the top's backing file instead of opening the name the top stores
   * (which must resolve to its file): a live snapshot puts its new top on the top it served,
   * without reopening it. The name is still judged by the policy.
   */
  backingDisk?: Disk
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
  return probeHead(head, length).name
}

/**
 * What probing `path` found, for the user: null when a driver recognised the file; otherwise a
 * sentence saying it is read as raw, and, when its name ends the way another format's images
 * do ('.add-cow'), that it has no header of that format (showing its first bytes).
 */
export async function probeNote(
  path: string,
): Promise<{ message: string; namedLike: string | null } | null> {
  const absolute = resolve(path)
  const { head, length } = await readHead(absolute)
  if (listFormats().some((format) => format.probe(head, length) > 0)) return null
  const named = listFormats().find((driver) =>
    (driver.extensions ?? []).some((ending) => absolute.toLowerCase().endsWith(ending)),
  )
  const first = [...head.subarray(0, 8)].map((byte) => byte.toString(16).padStart(2, '0')).join(' ')
  if (named) {
    return {
      message: `${absolute} is named like ${article(named.name)} ${named.name} image but has no ${named.name} header (its first bytes are ${first || 'none: it is empty'}); it is read as raw.`,
      namedLike: named.name,
    }
  }
  return {
    message: `${absolute} has no header of a known format; it is read as raw.`,
    namedLike: null,
  }
}

/** 'an' before a vowel sound (add-cow, raw is not), else 'a'. */
function article(word: string): string {
  return /^[aeio]/i.test(word) ? 'an' : 'a'
}

/**
 * Guard the first sector of a disk whose format was probed as raw, as QEMU does for a probed
 * raw image: a write there that would make the file look like another format (an image header
 * the next probe would believe) is refused with PERMISSION_DENIED, so a guest cannot turn its
 * disk into, say, an add-cow file naming a host file as its base. Giving the format (`-f raw`)
 * lifts the guard.
 */
export function guardProbedFirstSector(disk: Disk): Disk {
  const guarded = async (
    offset: number,
    data: Uint8Array,
    options?: WriteOptions,
  ): Promise<void> => {
    if (offset < PROBED_SECTOR) {
      const sector = await disk.read(0, Math.min(PROBE_BYTES, disk.size))
      sector.set(data.subarray(0, Math.max(0, sector.length - offset)), offset)
      const claimed = listFormats().find((format) => format.probe(sector, disk.size) > 0)
      if (claimed) {
        throw new EngineError(
          'PERMISSION_DENIED',
          `Refusing a write at offset ${offset} of ${disk.path}: its format was probed as raw, and the write would make it look like ${article(claimed.name)} ${claimed.name} image. Give the format (-f raw) to allow it.`,
          { path: disk.path, offset, field: 'first sector' },
        )
      }
    }
    return disk.write(offset, data, options)
  }
  return overrideDisk(disk, { write: guarded })
}

/**
 * `disk` with some of its members replaced by `overrides`: every other member is the disk's
 * own (functions bound to it), so the result is the same disk to everyone but for those.
 */
export function overrideDisk(disk: Disk, overrides: Partial<Disk>): Disk {
  return new Proxy(disk, {
    get(target, property) {
      if (Object.hasOwn(overrides, property)) return overrides[property as keyof Disk]
      const value: unknown = Reflect.get(target, property, target)
      return typeof value === 'function'
        ? (value as (...args: unknown[]) => unknown).bind(target)
        : value
    },
  })
}

/** The bytes of a probed raw image that the first-sector guard watches (QEMU's BLOCK_PROBE_BUF_SIZE is 512). */
const PROBED_SECTOR = 512

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

async function verifyRecordedFormat(
  driver: FormatDescription,
  path: string,
  namingFile: string,
): Promise<void> {
  // A format without a magic (raw) claims no file, so none can be checked against it.
  if (driver.fallback) return
  const { head, length } = await readHead(path)
  if (driver.probe(head, length) === 0) {
    const actual = probeHead(head, length).name
    throw new EngineError(
      'FORMAT_MISMATCH',
      `${namingFile} records ${bounded(path)} as ${driver.name}, but it is not a ${driver.name} file (it looks like ${actual}).`,
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
  const driver = await loadDriver(format, absolute)
  if (options.format) await verifyRecordedFormat(driver, absolute, 'The command line')
  const policy = options.policy ?? STRICT_POLICY
  const lenient = options.lenient ?? false
  const top = await realpath(absolute)
  return driver.open(
    absolute,
    makeOpenOptions(
      new Set([top]),
      0,
      options.readOnly ?? false,
      policy,
      lenient,
      options.backingDisk,
    ),
  )
}

function makeOpenOptions(
  visited: Set<string>,
  depth: number,
  readOnly: boolean,
  policy: NamePolicy,
  lenient: boolean,
  backingDisk?: Disk,
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
      if (verdict.followed && visited.has(verdict.realPath)) {
        // Inspection shows the name and why it is not followed, as for every refused name.
        if (lenient) {
          const self = verdict.realPath === (await realpath(resolve(namingFile)))
          return { ...verdict, followed: false, reason: self ? 'self' : 'same-file' }
        }
        throw new EngineError(
          'SAME_FILE',
          `The image file ${quote(storedName)} of ${namingFile} is already used by the chain (${bounded(verdict.realPath)}).`,
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
          `The backing file ${quote(storedName)} of ${namingFile} is already part of the chain (${bounded(verdict.realPath)}); the chain loops.`,
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
      if (backingDisk) return adoptBacking(backingDisk, verdict.realPath, namingFile, visited)
      const format = recordedFormat(namingFile, storedName, backingFormat)
      await verifyRecordedFormat(format, verdict.resolved, namingFile)
      const driver = await format.load()
      const below = new Set(visited)
      below.add(verdict.realPath)
      // Bases are always opened read-only; commit reopens the one it writes.
      const disk = await driver.open(
        verdict.resolved,
        makeOpenOptions(below, depth + 1, true, policy, lenient),
      )
      for (const path of below) visited.add(path)
      return disk
    },
  }
}

/**
 * The open `disk` as the backing file `namingFile` names (at `realPath`): INTERNAL unless it is
 * that file; its chain's files join `visited`, so a data file naming one of them is refused.
 */
async function adoptBacking(
  disk: Disk,
  realPath: string,
  namingFile: string,
  visited: Set<string>,
): Promise<Disk> {
  if ((await realpath(disk.path)) !== realPath) {
    throw new EngineError(
      'INTERNAL',
      `${namingFile} names ${realPath} as its backing file, not the open ${disk.path}.`,
      { path: namingFile, field: 'backing name' },
    )
  }
  for (const layer of chainOf(disk))
    for (const file of layerFiles(layer)) visited.add(await realpath(file))
  return disk
}

/** The backing format an image records, or UNSUPPORTED_FORMAT naming that image. */
function recordedFormat(namingFile: string, storedName: string, format: string): FormatEntry {
  try {
    return getFormat(format)
  } catch (error) {
    if (!isEngineError(error, 'UNSUPPORTED_FORMAT')) throw error
    const known = listFormats()
      .map((entry) => entry.name)
      .join(', ')
    throw new EngineError(
      'UNSUPPORTED_FORMAT',
      `${namingFile} records its backing file ${quote(storedName)} in format ${quote(format)}, which is not supported; known formats: ${known}.`,
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
