import { open, readdir } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import type { OperationOptions } from '../disk'
import { throwIfAborted } from '../errors'
import { realPath } from '../fs'
import { ADD_COW_MAGIC, FIELDS } from '../formats/add-cow/header'
import type { Library } from '../library'
import { resolveName } from '../names'

/** Folder entries looked at per folder; a bigger folder is searched only this far. */
const MAX_FOLDER_ENTRIES = 20_000
/** Longest backing name read from a header. */
const MAX_NAME = 4096

/** An image found to use a given base as its backing file. */
export interface DependentImage {
  path: string
  format: 'add-cow' | 'qcow2' | 'cow'
  /** The backing name as the image stores it. */
  backingName: string
}

/** What {@link findDependents} found, and whether it could look everywhere it meant to. */
export interface BlastRadius {
  base: string
  dependents: DependentImage[]
  /** Folders searched (the base's, the committing overlay's, and every library image's). */
  searched: string[]
  /** Folders cut short at {@link MAX_FOLDER_ENTRIES} entries. */
  truncated: string[]
}

async function readAt(
  handle: Awaited<ReturnType<typeof open>>,
  length: number,
  position: number,
): Promise<Buffer> {
  const buffer = Buffer.alloc(length)
  const { bytesRead } = await handle.read(buffer, 0, length, position)
  return buffer.subarray(0, bytesRead)
}

/**
 * The backing name `path` stores, if it is an add-cow, qcow2 or QEMU cow file; null otherwise.
 * Reads only the header bytes that locate the name; any oddity means "not a dependent".
 */
export async function storedBackingName(
  path: string,
): Promise<{ format: DependentImage['format']; name: string } | null> {
  let handle
  try {
    handle = await open(path, 'r')
    if (!(await handle.stat()).isFile()) return null
    const head = await readAt(handle, 76, 0)
    if (head.length < 8) return null
    if (head.length >= 76 && FIELDS.magic.get(head) === ADD_COW_MAGIC) {
      const offset = FIELDS.backingNameOffset.get(head)
      const length = FIELDS.backingNameLength.get(head)
      if (offset === 0 || length === 0 || length > MAX_NAME) return null
      const name = (await readAt(handle, length, offset)).toString('utf8')
      return name.length > 0 ? { format: 'add-cow', name } : null
    }
    if (head.readUInt32BE(0) === 0x514649fb) {
      // qcow2: backing_file_offset (u64) at 8, backing_file_size (u32) at 16, big-endian.
      if (head.length < 20) return null
      const offset = Number(head.readBigUInt64BE(8))
      const length = head.readUInt32BE(16)
      if (offset === 0 || length === 0 || length > MAX_NAME || !Number.isSafeInteger(offset))
        return null
      const name = (await readAt(handle, length, offset)).toString('utf8')
      return name.length > 0 ? { format: 'qcow2', name } : null
    }
    if (head.readUInt32BE(0) === 0x4f4f4f4d && head.readUInt32BE(4) === 2) {
      // QEMU cow v2: a 1024-byte NUL-terminated backing name at 8.
      const raw = await readAt(handle, 1024, 8)
      const end = raw.indexOf(0)
      const name = raw.subarray(0, end === -1 ? raw.length : end).toString('utf8')
      return name.length > 0 ? { format: 'cow', name } : null
    }
    return null
  } catch {
    return null
  } finally {
    await handle?.close().catch(() => undefined)
  }
}

/**
 * Find the images that use `base` as their backing file: every add-cow, qcow2 and cow file in
 * the base's folder, in the extra `folders`, in the folders of the library's images, and the
 * library's images themselves. `exclude` (real paths) are left out, such as the overlay being
 * committed. These are the overlays whose guest view a commit into `base` would change.
 */
export async function findDependents(
  base: string,
  options: OperationOptions & { library?: Library; folders?: string[]; exclude?: string[] } = {},
): Promise<BlastRadius> {
  const target = await realPath(base)
  const exclude = new Set(await Promise.all((options.exclude ?? []).map(realPath)))
  const candidates = new Set<string>()
  const folders = new Set<string>([
    dirname(target),
    ...(options.folders ?? []).map((folder) => resolve(folder)),
  ])
  const library = options.library ? await options.library.load() : null
  for (const image of library?.images ?? []) {
    candidates.add(image.path)
    folders.add(dirname(image.path))
  }
  const truncated: string[] = []
  for (const folder of folders) {
    throwIfAborted(options.signal, 'search for overlays')
    let entries
    try {
      entries = await readdir(folder, { withFileTypes: true })
    } catch {
      continue
    }
    if (entries.length > MAX_FOLDER_ENTRIES) truncated.push(folder)
    for (const entry of entries.slice(0, MAX_FOLDER_ENTRIES)) {
      if (entry.isFile() || entry.isSymbolicLink()) candidates.add(join(folder, entry.name))
    }
  }
  const dependents: DependentImage[] = []
  const seen = new Set<string>()
  let done = 0
  for (const candidate of candidates) {
    throwIfAborted(options.signal, 'search for overlays')
    options.onProgress?.(++done, candidates.size)
    const real = await realPath(candidate)
    if (real === target || exclude.has(real) || seen.has(real)) continue
    seen.add(real)
    const stored = await storedBackingName(real)
    if (!stored || stored.name.startsWith('json:')) continue
    if ((await realPath(resolveName(real, stored.name))) === target) {
      dependents.push({ path: real, format: stored.format, backingName: stored.name })
    }
  }
  dependents.sort((a, b) => a.path.localeCompare(b.path))
  return { base: target, dependents, searched: [...folders], truncated }
}
