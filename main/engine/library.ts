import { cp, mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises'
import type * as MachineTypes from '../../shared/machine-types'
import type { SavedMachine, SavedMachineInput } from '../../shared/machine-types'
import { homedir } from 'node:os'
import { basename, dirname, join, resolve } from 'node:path'
import { bounded, EngineError, quote, wrapIoError } from './errors'
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
  /** Saved machines (added by issue 14; absent in older files). Checked on read. */
  machines?: unknown[]
}

/** Unreadable entries a library warning names one by one; the rest are counted. */
const MAX_PROBLEMS_NAMED = 5
/** Earlier copies of a damaged library file compared with the current one before a new copy. */
const MAX_BAD_COPIES_COMPARED = 20

/** The warning for a library file with unreadable entries: each named, and where the copy is. */
function describeProblems(file: string, problems: LibraryProblem[], copy: string | null): string {
  const named = problems
    .slice(0, MAX_PROBLEMS_NAMED)
    .map((problem) => `${problem.where} ${problem.what}`)
  if (problems.length > MAX_PROBLEMS_NAMED)
    named.push(`and ${problems.length - MAX_PROBLEMS_NAMED} more`)
  const count = problems.length === 1 ? '1 entry' : `${problems.length} entries`
  const kept =
    copy === null
      ? 'A copy of the file could not be written: fix or back up the file before the library is next saved, which leaves these entries out.'
      : `The file as read is kept in ${copy}; the next save of the library leaves these entries out of ${file}, and that copy keeps them.`
  return `The library file ${file} has ${count} that cannot be read, left out: ${named.join('; ')}. ${kept}`
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
  /**
   * A live commit (`addcow job commit`, the app's Commit… on a running VM) records itself when
   * it starts, with the pid of the process serving the image: while that process lives the
   * commit runs; once it is gone without clearing the record, a crash cut the commit short.
   */
  runningIn?: number
  /**
   * That process's identity where the system tells it (engine/processes.ts): a later process
   * given the same pid is not taken for it.
   */
  runningProcess?: string
}

/**
 * `record` without the process that ran it ({@link InterruptedCommit.runningIn} and
 * {@link InterruptedCommit.runningProcess}): a commit that stopped, or what the app shows.
 */
export function withoutRunningProcess(record: InterruptedCommit): InterruptedCommit {
  const { runningIn: _pid, runningProcess: _identity, ...stopped } = record
  void _pid
  void _identity
  return stopped
}

/** Ranges of an interrupted commit kept in the library (the rest are summed in the bytes). */
export const MAX_INTERRUPTED_RANGES = 64

/** Most recent files kept. */
const MAX_RECENT = 20

/**
 * The saved-machine schema, loaded when machines are read or saved: it brings zod, whose
 * loading was most of the start-up of every other command (`addcow info`, issue 15 item 5).
 */
function machineTypes(): Promise<typeof MachineTypes> {
  return import('../../shared/machine-types')
}
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

/** How a JSON value reads in a message: "a number", "null", "a list"... */
function kindOf(value: unknown): string {
  if (value === null) return 'null'
  if (Array.isArray(value)) return 'a list'
  if (typeof value === 'object') return 'an object'
  if (typeof value === 'string') return 'a string'
  if (typeof value === 'number') return 'a number'
  if (typeof value === 'boolean') return 'a boolean'
  return typeof value
}

/**
 * The first field of `entry` that does not have its expected kind, as `[field, expected]`, or
 * null when every field does. `fields` maps a field name to a test and the words for it.
 */
function badField(
  entry: unknown,
  fields: Record<string, [(value: unknown) => boolean, string]>,
): [string | null, string, unknown] | null {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry))
    return [null, 'an object', entry]
  for (const [field, [test, expected]] of Object.entries(fields)) {
    const value = (entry as Record<string, unknown>)[field]
    if (!test(value)) return [field, expected, value]
  }
  return null
}

const TEXT: [(value: unknown) => boolean, string] = [isText, 'a string']
const PATH: [(value: unknown) => boolean, string] = [
  (value) => isText(value) && value !== '',
  'a non-empty string',
]

const IMAGE_FIELDS = { path: PATH, addedAt: TEXT }
const TRUSTED_FIELDS = {
  from: PATH,
  to: PATH,
  reason: [
    (value: unknown) => value === 'created' || value === 'approved',
    "'created' or 'approved'",
  ],
  at: TEXT,
} satisfies Record<string, [(value: unknown) => boolean, string]>
const RECENT_FIELDS = { '': PATH }
const FINGERPRINT_FIELDS = {
  version: [(value: unknown) => value === 1, '1'],
  overlay: PATH,
  base: PATH,
  format: TEXT,
  size: [Number.isSafeInteger, 'a whole number'],
  files: [
    (value: unknown) =>
      Array.isArray(value) &&
      value.length <= 16 &&
      value.every(
        (file: Partial<BaseFingerprint['files'][number]> | null) =>
          typeof file?.path === 'string' &&
          Number.isSafeInteger(file.length) &&
          typeof file.mtimeMs === 'number',
      ),
    'a list of at most 16 {path, length, mtimeMs}',
  ],
  sampleSize: [Number.isSafeInteger, 'a whole number'],
  samples: [Number.isSafeInteger, 'a whole number'],
  sha256: TEXT,
} satisfies Record<string, [(value: unknown) => boolean, string]>

/** One entry (or list) of a library file that could not be read, and why. */
export interface LibraryProblem {
  /** Where, as a JSON path: `images[3].path`, `trusted`. */
  where: string
  /** What is wrong, in words: "is a number, not a string". */
  what: string
}

/**
 * Read a parsed library file list by list and entry by entry: every entry that can be read is
 * kept; each one that cannot is left out and named in `problems` (list, index, field). Fields
 * this version does not know (written by a newer version) are kept as they are. Null when the
 * file is not a version-1 library at all.
 */
export function readLibraryData(
  parsed: unknown,
): { data: LibraryData; problems: LibraryProblem[] } | null {
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return null
  const raw = parsed as Record<string, unknown>
  const problems: LibraryProblem[] = []
  if (raw.version !== 1) {
    // Another version number is another format (a newer app's): not read. A version field that
    // is missing or of the wrong type, beside a list of images, is a damaged version-1 file: its
    // entries are read like any other, and the field is named.
    if (typeof raw.version === 'number' || !Array.isArray(raw.images)) return null
    problems.push({ where: 'version', what: `is ${kindOf(raw.version)}, not 1` })
  }
  const list = <T>(
    name: string,
    fields: Record<string, [(value: unknown) => boolean, string]>,
    optional: boolean,
  ): T[] | undefined => {
    const value = raw[name]
    if (value === undefined && optional) return undefined
    if (!Array.isArray(value)) {
      problems.push({ where: name, what: `is ${kindOf(value)}, not a list` })
      return []
    }
    const kept: T[] = []
    for (const [index, entry] of (value as unknown[]).entries()) {
      // A list of plain strings has one unnamed field: the entry itself.
      const bad = '' in fields ? badField({ '': entry }, fields) : badField(entry, fields)
      if (!bad) {
        kept.push(entry as T)
        continue
      }
      const [field, expected, found] = bad
      const where =
        field === null || field === '' ? `${name}[${index}]` : `${name}[${index}].${field}`
      const shown =
        typeof found === 'string' || typeof found === 'number' || typeof found === 'boolean'
          ? ` (${typeof found === 'string' ? quote(found) : String(found)})`
          : ''
      problems.push({
        where,
        what: `is ${found === undefined ? 'missing' : kindOf(found)}${shown}, not ${expected}`,
      })
    }
    return kept
  }
  const data: LibraryData = {
    ...(raw as Partial<LibraryData>),
    version: 1,
    images: list<LibraryImage>('images', IMAGE_FIELDS, false)!,
    trusted: list<TrustedPair>('trusted', TRUSTED_FIELDS, false)!,
    recent: list<string>('recent', RECENT_FIELDS, true) ?? [],
  }
  const fingerprints = list<BaseFingerprint>('fingerprints', FINGERPRINT_FIELDS, true)
  if (fingerprints) data.fingerprints = fingerprints
  return { data, problems }
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
 * entries. A file that is not a library at all is moved aside (kept for the user) and the
 * library starts empty; a file with some unreadable entries is copied aside and the rest is used
 * (see {@link Library.load}).
 */
export class Library {
  /** Set when a load found a corrupt file or unreadable entries; the reader clears it. */
  lastWarning: string | null = null

  constructor(readonly file: string = join(defaultDataDir(), 'library.json')) {}

  /**
   * Read the library; a missing file is an empty library. A file that is not JSON (or not a
   * version-1 library) is moved aside and a new library starts. A file with entries that cannot
   * be read (a field of the wrong type) keeps working: the readable entries are returned, a copy
   * of the file is kept beside it (`library.json.bad-TIMESTAMP`, one per distinct content), and
   * {@link lastWarning} names each unreadable entry and the copy. The next save leaves the
   * unreadable entries out of the library file; the copy keeps them.
   */
  async load(): Promise<LibraryData> {
    let text: string
    try {
      text = await readFile(this.file, 'utf8')
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return emptyLibrary()
      throw wrapIoError(error, this.file, 'read the library')
    }
    let read: ReturnType<typeof readLibraryData> = null
    let reason = 'it is not a version-1 library'
    try {
      read = readLibraryData(JSON.parse(text))
    } catch (error) {
      reason = `it is not JSON: ${bounded(error instanceof Error ? error.message : String(error))}`
    }
    if (!read) {
      const aside = `${this.file}.corrupt-${Date.now()}`
      await rename(this.file, aside).catch(() => undefined)
      this.lastWarning = `The library file ${this.file} was corrupt; it was moved to ${aside} and a new one started (${reason}).`
      return emptyLibrary()
    }
    if (read.problems.length > 0) {
      const copy = await this.keepCopy(text)
      this.lastWarning = describeProblems(this.file, read.problems, copy)
    }
    return read.data
  }

  /**
   * Keep `text` (the library file as read) beside it, once per distinct content: an existing
   * `library.json.bad-*` with the same bytes is reused, so loading a damaged file again and
   * again does not fill the folder. Returns the copy's path, or null if it could not be written.
   */
  private async keepCopy(text: string): Promise<string | null> {
    const folder = dirname(this.file)
    const prefix = `${basename(this.file)}.bad-`
    const bytes = Buffer.from(text, 'utf8')
    const existing = (await readdir(folder).catch(() => [] as string[]))
      .filter((name) => name.startsWith(prefix) && !name.includes('.tmp-'))
      .sort()
      .reverse()
      .slice(0, MAX_BAD_COPIES_COMPARED)
    for (const name of existing) {
      const path = join(folder, name)
      const info = await stat(path).catch(() => null)
      if (info?.size !== bytes.length) continue
      if ((await readFile(path).catch(() => null))?.equals(bytes)) return path
    }
    const stamp = new Date().toISOString().replace(/[:.]/g, '-')
    const copy = join(folder, `${prefix}${stamp}`)
    // Written under a temporary name and renamed, so a copy is never seen half-written (another
    // process compares the copies it finds with the file it read).
    const temporary = `${copy}.tmp-${process.pid}`
    try {
      await writeFile(temporary, bytes, { mode: 0o600 })
      await rename(temporary, copy)
      return copy
    } catch {
      await rm(temporary, { force: true }).catch(() => undefined)
      return null
    }
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

  /**
   * The saved machines, by name. An entry the user broke by hand is left out (and left in the
   * file): `machineProblems` names it.
   */
  async machines(): Promise<SavedMachine[]> {
    const data = await this.load()
    this.machineProblems = []
    const { SavedMachineSchema } = await machineTypes()
    const machines: SavedMachine[] = []
    for (const [index, entry] of (data.machines ?? []).entries()) {
      const parsed = SavedMachineSchema.safeParse(entry)
      if (parsed.success) machines.push(parsed.data)
      else
        this.machineProblems.push(
          `machine ${index + 1} in ${this.file}: ${parsed.error.issues[0]?.path.join('.') ?? ''} ${parsed.error.issues[0]?.message ?? 'is not valid'}`,
        )
    }
    return machines.sort((a, b) => a.name.localeCompare(b.name))
  }

  /** Why entries of `machines` were left out at the last {@link machines} call. */
  machineProblems: string[] = []

  /**
   * The folder of a saved machine's own files (its UEFI variable store), beside the library
   * file: `machines/NAME`. Saved names are MachineNameSchema names; this checks only what keeps
   * the folder inside `machines/` (no '/', NUL, '.' or '..'), so that zod loads only when a
   * machine is read or saved. It moves with a rename, is copied with {@link copyMachine} and
   * deleted with the machine.
   */
  machineFolder(name: string): string {
    if (name === '' || name === '.' || name === '..' || /[/\\\0]/.test(name)) {
      throw new EngineError('BAD_ARGUMENT', `${quote(name)} is not a machine name.`, {
        field: 'name',
        value: bounded(name),
      })
    }
    return join(dirname(this.file), 'machines', name)
  }

  /**
   * Save a machine. `replace` false refuses an existing name (ALREADY_EXISTS); `previousName`
   * renames (the old entry goes, its folder follows).
   */
  async saveMachine(
    machine: SavedMachineInput,
    options: { replace?: boolean; previousName?: string } = {},
  ): Promise<SavedMachine> {
    const { SavedMachineSchema } = await machineTypes()
    const saved = SavedMachineSchema.parse(machine)
    await this.update((data) => {
      const list = (data.machines ?? []).filter(
        (entry) => (entry as { name?: unknown } | null)?.name !== options.previousName,
      )
      const existing = list.findIndex(
        (entry) => (entry as { name?: unknown } | null)?.name === saved.name,
      )
      if (existing >= 0 && !options.replace) {
        throw new EngineError(
          'ALREADY_EXISTS',
          `A machine named '${saved.name}' already exists in ${this.file}.`,
          { field: 'name', value: saved.name },
        )
      }
      if (existing >= 0) list[existing] = saved
      else list.push(saved)
      data.machines = list
    })
    if (options.previousName !== undefined && options.previousName !== saved.name)
      await this.moveMachineFolder(options.previousName, saved.name)
    return saved
  }

  private async moveMachineFolder(from: string, to: string): Promise<void> {
    const target = this.machineFolder(to)
    await rm(target, { recursive: true, force: true })
    await rename(this.machineFolder(from), target).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw wrapIoError(error, this.machineFolder(from), 'rename')
    })
  }

  /** Duplicate a machine under a new name, with a copy of its files (its UEFI settings). */
  async copyMachine(name: string, newName: string): Promise<SavedMachine> {
    const machine = await this.machine(name)
    const saved = await this.saveMachine({ ...machine, name: newName })
    await cp(this.machineFolder(name), this.machineFolder(newName), {
      recursive: true,
      errorOnExist: false,
      force: true,
    }).catch((error: NodeJS.ErrnoException) => {
      if (error.code !== 'ENOENT') throw wrapIoError(error, this.machineFolder(name), 'copy')
    })
    return saved
  }

  /** Remove a machine by name, and its folder (NOT_FOUND when there is none). */
  async removeMachine(name: string): Promise<void> {
    await this.update((data) => {
      const list = data.machines ?? []
      const kept = list.filter((entry) => (entry as { name?: unknown } | null)?.name !== name)
      if (kept.length === list.length)
        throw new EngineError('NOT_FOUND', `There is no machine named '${name}' in ${this.file}.`, {
          field: 'name',
          value: name,
        })
      data.machines = kept
    })
    await rm(this.machineFolder(name), { recursive: true, force: true })
  }

  /** One machine by name (NOT_FOUND when there is none). */
  async machine(name: string): Promise<SavedMachine> {
    const found = (await this.machines()).find((machine) => machine.name === name)
    if (!found)
      throw new EngineError('NOT_FOUND', `There is no machine named '${name}' in ${this.file}.`, {
        field: 'name',
        value: name,
      })
    return found
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

  /**
   * Forget the base fingerprint of `overlay` (a real path): after an active live commit the
   * overlay is empty while the guest goes on writing its base, so any fingerprint would go stale
   * at once, and an empty overlay has nothing a changed base could corrupt.
   */
  async forgetBaseFingerprint(overlay: string): Promise<void> {
    await this.update((data) => {
      data.fingerprints = (data.fingerprints ?? []).filter(
        (entry) => !isBaseFingerprint(entry) || entry.overlay !== overlay,
      )
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
    return Library.policyOf(await this.load(), options)
  }

  /** {@link policy} from library data already loaded (a caller that needs both reads once). */
  static policyOf(
    data: LibraryData,
    options: { allowAny?: boolean; allowedPaths?: Iterable<string> } = {},
  ): NamePolicy {
    const trusted = new Set(data.trusted.map((pair) => `${pair.from}\0${pair.to}`))
    return makePolicy({
      ...options,
      isTrustedPair: (from, to) => trusted.has(`${from}\0${to}`),
    })
  }
}
