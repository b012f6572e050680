import { link, lstat, open, realpath, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { EngineError, throwIfAborted, wrapIoError } from './errors'
import { BlockFile } from './file'

/**
 * File-system helpers every part of the engine (and the rest of main/) uses: one way to name a
 * file by its real path, and one way to replace a file atomically.
 */

/**
 * The real path of `path` (symbolic links and `..` resolved), or `path` made absolute when it
 * cannot be resolved (a missing file): locks, fingerprints, trust pairs and loop checks all key
 * files by this name, so two spellings of one file compare equal.
 */
export async function realPath(path: string): Promise<string> {
  return realpath(path).catch(() => resolve(path))
}

/** Whether anything (a file, a folder, a dangling symbolic link) exists at `path`. */
export async function pathExists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  )
}

/** What {@link filesIdentity} says of a set of files. */
export interface FilesIdentity {
  /** One line per file: its path and device, inode, size, modification and change times. */
  text: string
  /** The newest modification or change time among them, in ms since the epoch (0 if none). */
  newest: number
}

/**
 * The identity of `files` (a missing file is named as missing): equal texts mean no file was
 * replaced, resized or written since, as far as the file system's times can tell. Caches keyed
 * by it (kept disks, library summaries) stay valid while it does; a file changed less than the
 * times' granularity before it was taken may still change unseen, so such caches also refuse to
 * keep what was read right after a change (`newest`).
 */
export async function filesIdentity(
  files: readonly string[],
  identityOf: (file: string) => Promise<FileIdentity> = fileIdentity,
): Promise<FilesIdentity> {
  const parts = await Promise.all(files.map(identityOf))
  return {
    text: parts.map((part) => part.text).join('\n'),
    newest: Math.max(0, ...parts.map((part) => part.newest)),
  }
}

/** One file's line of {@link filesIdentity}, and its newest time (0 when missing). */
export interface FileIdentity {
  text: string
  newest: number
}

/** The identity of one file, as {@link filesIdentity} writes it. */
export async function fileIdentity(file: string): Promise<FileIdentity> {
  const info = await stat(file, { bigint: true }).catch(() => null)
  if (!info) return { text: `${file}:missing`, newest: 0 }
  return {
    text: `${file}:${info.dev}:${info.ino}:${info.size}:${info.mtimeNs}:${info.ctimeNs}`,
    newest: Math.max(Number(info.mtimeMs), Number(info.ctimeMs)),
  }
}

/** Whether `path` is a regular file (following symbolic links). */
export async function isRegularFile(path: string): Promise<boolean> {
  return stat(path).then(
    (info) => info.isFile(),
    () => false,
  )
}

/** Grow the file at `path` to `length` bytes (sparsely; never shrinks it) and sync it. */
export async function growFile(path: string, length: number): Promise<void> {
  const file = await BlockFile.open(path, true)
  try {
    if ((await file.length()) < length) await file.truncate(length)
    await file.sync()
  } finally {
    await file.close()
  }
}

/**
 * Make a rename or link in `folder` durable (fsync of the folder). Some file systems cannot
 * sync a folder: the rename is still ordered after the data sync that came before it.
 */
export async function syncFolder(folder: string): Promise<void> {
  const handle = await open(folder, 'r').catch(() => null)
  if (!handle) return
  try {
    await handle.sync()
  } catch {
    // Not supported here; nothing more can be done.
  } finally {
    await handle.close()
  }
}

/** How {@link replaceFile} writes its file. */
export interface ReplaceFileOptions {
  /**
   * Never replace an existing file: the new file is linked into place (link() fails if the
   * name exists, atomically) and an existing one is an ALREADY_EXISTS error.
   */
  exclusive?: boolean
  /** Permission bits of a new file; default: the replaced file's, else 0o666 less the umask. */
  mode?: number
  /** Last part of the temporary file's name (`.NAME.RANDOM.TAG`), so a leftover says who left it. */
  tag?: string
  /** Checked after the content is written and before the file takes the name. */
  signal?: AbortSignal
  /** The operation a cancel names ("The header rewrite was cancelled."). */
  operation?: string
  /** What is being done, for error messages ("write the library", "create"). */
  doing?: string
}

/**
 * Give `path` new content atomically: `write` fills a temporary file beside it (a fresh,
 * empty {@link BlockFile}, writable), which is then synced, renamed over `path` (or linked,
 * when `exclusive`), and the folder synced. A crash at any point leaves the old file or the new
 * one, never a mix; an error or a cancel removes the temporary file and leaves `path` as it was.
 */
export async function replaceFile(
  path: string,
  write: (file: BlockFile) => Promise<void>,
  options: ReplaceFileOptions = {},
): Promise<void> {
  const target = resolve(path)
  const folder = dirname(target)
  // node:crypto loads on use: reading commands never replace a file.
  const { randomBytes } = await import('node:crypto')
  const temporary = join(
    folder,
    `.${basename(target)}.${randomBytes(4).toString('hex')}.${options.tag ?? 'tmp'}`,
  )
  const doing = options.doing ?? 'write'
  try {
    const mode =
      options.mode ??
      (await stat(target).then(
        (info) => info.mode & 0o7777,
        () => 0o666,
      ))
    await (await open(temporary, 'wx', mode)).close()
    const file = await BlockFile.open(temporary, true)
    try {
      await write(file)
      throwIfAborted(options.signal, options.operation)
      await file.sync()
    } finally {
      await file.close()
    }
    throwIfAborted(options.signal, options.operation)
    if (options.exclusive) {
      try {
        await link(temporary, target)
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
          throw new EngineError(
            'ALREADY_EXISTS',
            `${target} already exists; refusing to overwrite it.`,
            {
              path: target,
            },
          )
        }
        throw error
      }
      await rm(temporary, { force: true })
    } else {
      await rename(temporary, target)
    }
  } catch (error) {
    await rm(temporary, { force: true })
    // Only what the OS said is an I/O error; anything else thrown by `write` is a bug and
    // surfaces as one (INTERNAL), not as "Cannot write" with a programming error's text.
    if (
      !(error instanceof EngineError) &&
      typeof (error as NodeJS.ErrnoException)?.code !== 'string'
    )
      throw error
    throw wrapIoError(error, target, doing)
  }
  await syncFolder(folder)
}
