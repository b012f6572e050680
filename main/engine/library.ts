import { mkdir, open, readFile, rename, rm, stat } from 'node:fs/promises'
import { homedir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { EngineError, wrapIoError } from './errors'
import { replaceFile } from './fs'
import { makePolicy, type NamePolicy } from './names'

/** A (naming file → named file) pair the user trusts, both real absolute paths. */
export interface TrustedPair {
  from: string
  to: string
  /** Why: created by this tool, or approved by the user. */
  reason: 'created' | 'approved'
  at: string
}

/** An image the user has opened, created or dropped into the app. */
export interface LibraryImage {
  path: string
  addedAt: string
}

/**
 * What an overlay's base looked like when the overlay was made (or last vouched for): see
 * main/engine/ops/drift.ts. Kept here, outside the add-cow file, which stays byte-exact.
 */
export interface BaseFingerprint {
  version: 1
  /** Real path of the overlay's add-cow file (the key). */
  overlay: string
  /** Real path of the base, and its format. */
  base: string
  format: string
  /** The base's virtual size. */
  size: number
  /** Every file of the base layer (an add-cow base has two): length and modification time. */
  files: { path: string; length: number; mtimeMs: number }[]
  /** SHA-256 over `samples` reads of `sampleSize` bytes spread evenly over the guest view. */
  sampleSize: number
  samples: number
  sha256: string
  recordedAt: string
}

/**
 * Where the base of an overlay stands against its recorded fingerprint.
 *
 * - `unchanged`: size, files (length and mtime) and sampled content match the record;
 * - `changed`: at least one differs (see `changes`); the overlay's guest view may be corrupt;
 * - `not-recorded`: no fingerprint was recorded (made elsewhere, or by another tool);
 * - `no-backing`: the image has no backing file;
 * - `not-consulted`: ALL_ALLOCATED is set, so the base is never read.
 */
export type DriftStatus = 'unchanged' | 'changed' | 'not-recorded' | 'no-backing' | 'not-consulted'

/** The library file's content (version 1). */
export interface LibraryData {
  version: 1
  images: LibraryImage[]
  trusted: TrustedPair[]
  recent: string[]
  /** Base fingerprints by overlay (added by issue 3; absent in older files). */
  fingerprints?: BaseFingerprint[]
  /** Commits that stopped part way (issue 12; absent in older files), one per overlay. */
  interruptedCommits?: InterruptedCommit[]
}

/**
 * A commit that stopped part way (cancelled, or an error): what the base holds now. Kept in the
 * library so that the CLI and the app can say so, and offer Resume and Roll back, until the
 * commit is finished or rolled back. The overlay's guest view is unchanged by a partial commit.
 */
export interface InterruptedCommit {
  /** Real paths of the overlay and of the base it was being committed into. */
  overlay: string
  base: string
  /** The undo journal of the commit, when it had one (then it can be rolled back). */
  journal: string | null
  /** Guest bytes of the overlay already copied into the base, and the first of their ranges. */
  bytesCommitted: number
  ranges: [number, number][]
  /** Bytes of the overlay the whole commit would copy. */
  bytesTotal: number
  /** Other images that read through the base, so now see part of the commit. */
  dependents: string[]
  /** Why it stopped: the error's code and message. */
  code: string
  message: string
  at: string
}

/** Ranges of an interrupted commit kept in the library (the rest are summed in the bytes). */
export const MAX_INTERRUPTED_RANGES = 64

/** Most recent files kept. */
const MAX_RECENT = 20
/** A lock file older than this is taken to be left by a crashed process. */
const STALE_LOCK_MS = 10_000
const LOCK_TIMEOUT_MS = 15_000

/** The empty library. */
export function emptyLibrary(): LibraryData {
  return { version: 1, images: [], trusted: [], recent: [] }
}

/**
 * The folder the CLI and the app share for user data: $ADDCOW_DATA_DIR if set, else the
 * platform's per-user application folder ("AddCow Studio", as Electron's userData names it).
 */
export function defaultDataDir(): string {
  const override = process.env.ADDCOW_DATA_DIR
  if (override) return resolve(override)
  const name = 'AddCow Studio'
  if (process.platform === 'darwin') return join(homedir(), 'Library', 'Application Support', name)
  if (process.platform === 'win32') {
    return join(process.env.APPDATA ?? join(homedir(), 'AppData', 'Roaming'), name)
  }
  return join(process.env.XDG_CONFIG_HOME ?? join(homedir(), '.config'), name)
}

function isLibraryData(value: unknown): value is LibraryData {
  if (typeof value !== 'object' || value === null) return false
  const data = value as Partial<LibraryData>
  return (
    data.version === 1 &&
    Array.isArray(data.images) &&
    data.images.every((image) => typeof image?.path === 'string') &&
    Array.isArray(data.trusted) &&
    data.trusted.every((pair) => typeof pair?.from === 'string' && typeof pair?.to === 'string') &&
    (data.recent === undefined ||
      (Array.isArray(data.recent) && data.recent.every((entry) => typeof entry === 'string')))
  )
}

function isText(value: unknown): value is string {
  return typeof value === 'string'
}

/** Whether `value` is a well-formed {@link BaseFingerprint} (the file is user-editable). */
export function isBaseFingerprint(value: unknown): value is BaseFingerprint {
  const entry = value as Partial<BaseFingerprint> | null
  return (
    typeof entry === 'object' &&
    entry !== null &&
    entry.version === 1 &&
    [entry.overlay, entry.base, entry.format, entry.sha256].every(isText) &&
    Number.isSafeInteger(entry.size) &&
    Array.isArray(entry.files) &&
    entry.files.length <= 16 &&
    entry.files.every(
      (file) =>
        typeof file?.path === 'string' &&
        Number.isSafeInteger(file.length) &&
        typeof file.mtimeMs === 'number',
    ) &&
    Number.isSafeInteger(entry.sampleSize) &&
    Number.isSafeInteger(entry.samples)
  )
}

/**
 * The persisted library of known images and trusted name pairs, shared by the CLI and the app.
 *
 * Writes are atomic (temporary file, fsync, rename), so a crash mid-write leaves the old file.
 * Writers take a lock file, so the CLI and the app can update it at once without losing
 * entries. A corrupt file is moved aside (kept for the user) and the library starts empty.
 */
export class Library {
  /** Set when the last load found a corrupt file and moved it aside. */
  lastWarning: string | null = null

  constructor(readonly file: string = join(defaultDataDir(), 'library.json')) {}

  /** Read the library; a missing file is an empty library, a corrupt one is moved aside. */
  async load(): Promise<LibraryData> {
    let text: string
    try {
      text = await readFile(this.file, 'utf8')
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return emptyLibrary()
      throw wrapIoError(error, this.file, 'read the library')
    }
    try {
      const parsed: unknown = JSON.parse(text)
      if (isLibraryData(parsed)) return { ...parsed, recent: parsed.recent ?? [] }
    } catch {
      // fall through to the corrupt case
    }
    const aside = `${this.file}.corrupt-${Date.now()}`
    await rename(this.file, aside).catch(() => undefined)
    this.lastWarning = `The library file ${this.file} was corrupt; it was moved to ${aside} and a new one started.`
    return emptyLibrary()
  }

  /** Apply `change` to the current content under the lock, and write the result atomically. */
  async update(change: (data: LibraryData) => void): Promise<LibraryData> {
    await mkdir(dirname(this.file), { recursive: true })
    const unlock = await this.lock()
    try {
      const data = await this.load()
      change(data)
      await this.writeAtomically(data)
      return data
    } finally {
      await unlock()
    }
  }

  private async writeAtomically(data: LibraryData): Promise<void> {
    const text = Buffer.from(JSON.stringify(data, null, 2) + '\n', 'utf8')
    await replaceFile(this.file, (file) => file.writeAt(text, 0), {
      mode: 0o600,
      doing: 'write the library',
    })
  }

  private async lock(): Promise<() => Promise<void>> {
    const lockFile = `${this.file}.lock`
    const started = Date.now()
    for (let attempt = 0; ; attempt++) {
      try {
        const handle = await open(lockFile, 'wx')
        await handle.writeFile(String(process.pid))
        await handle.close()
        return () => rm(lockFile, { force: true })
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') {
          throw wrapIoError(error, lockFile, 'lock the library')
        }
      }
      const age = await stat(lockFile).then(
        (info) => Date.now() - info.mtimeMs,
        () => 0,
      )
      if (age > STALE_LOCK_MS) {
        await rm(lockFile, { force: true })
        continue
      }
      if (Date.now() - started > LOCK_TIMEOUT_MS) {
        throw new EngineError(
          'BUSY',
          `The library ${this.file} is locked by another process (${lockFile}).`,
          {
            path: lockFile,
          },
        )
      }
      await new Promise((done) => setTimeout(done, Math.min(5 + attempt * 5, 100)))
    }
  }

  /** Record that `from` may follow the name that leads to `to` (real paths). */
  async trust(pairs: { from: string; to: string }[], reason: TrustedPair['reason']): Promise<void> {
    if (pairs.length === 0) return
    await this.update((data) => {
      for (const pair of pairs) {
        if (!data.trusted.some((known) => known.from === pair.from && known.to === pair.to)) {
          data.trusted.push({ ...pair, reason, at: new Date().toISOString() })
        }
      }
    })
  }

  /** Add images to the library and to the recent list. */
  async addImages(paths: string[]): Promise<void> {
    await this.update((data) => {
      for (const path of paths.map((entry) => resolve(entry))) {
        if (!data.images.some((image) => image.path === path)) {
          data.images.push({ path, addedAt: new Date().toISOString() })
        }
        data.recent = [path, ...data.recent.filter((entry) => entry !== path)].slice(0, MAX_RECENT)
      }
    })
  }

  /** Remove images from the library (their files are untouched). */
  async removeImages(paths: string[]): Promise<void> {
    const gone = new Set(paths.map((entry) => resolve(entry)))
    await this.update((data) => {
      data.images = data.images.filter((image) => !gone.has(image.path))
    })
  }

  /** The recorded base fingerprint of `overlay` (a real path), or null. Malformed entries are ignored. */
  async baseFingerprint(overlay: string): Promise<BaseFingerprint | null> {
    const data = await this.load()
    return (
      (data.fingerprints ?? []).find(
        (entry) => isBaseFingerprint(entry) && entry.overlay === overlay,
      ) ?? null
    )
  }

  /** Record (or replace) the base fingerprint of `fingerprint.overlay`. */
  async recordBaseFingerprint(fingerprint: BaseFingerprint): Promise<void> {
    await this.update((data) => {
      const kept = (data.fingerprints ?? []).filter(
        (entry) => isBaseFingerprint(entry) && entry.overlay !== fingerprint.overlay,
      )
      data.fingerprints = [...kept, fingerprint]
    })
  }

  /** The interrupted commit of `overlay` (a real path), or null. */
  async interruptedCommit(overlay: string): Promise<InterruptedCommit | null> {
    const data = await this.load()
    return (data.interruptedCommits ?? []).find((entry) => entry?.overlay === overlay) ?? null
  }

  /** Record (or replace) the interrupted commit of `commit.overlay`. */
  async recordInterruptedCommit(commit: InterruptedCommit): Promise<void> {
    await this.update((data) => {
      const kept = (data.interruptedCommits ?? []).filter(
        (entry) => entry?.overlay !== commit.overlay,
      )
      data.interruptedCommits = [...kept, commit]
    })
  }

  /** Forget the interrupted commit of `overlay` (finished or rolled back); no-op without one. */
  async clearInterruptedCommit(overlay: string): Promise<void> {
    const data = await this.load()
    if (!(data.interruptedCommits ?? []).some((entry) => entry?.overlay === overlay)) return
    await this.update((next) => {
      next.interruptedCommits = (next.interruptedCommits ?? []).filter(
        (entry) => entry?.overlay !== overlay,
      )
    })
  }

  /** A name policy that trusts the library's pairs, plus the run's explicit allowances. */
  async policy(
    options: { allowAny?: boolean; allowedPaths?: Iterable<string> } = {},
  ): Promise<NamePolicy> {
    const data = await this.load()
    const trusted = new Set(data.trusted.map((pair) => `${pair.from}\0${pair.to}`))
    return makePolicy({
      ...options,
      isTrustedPair: (from, to) => trusted.has(`${from}\0${to}`),
    })
  }
}
