import { existsSync } from 'node:fs'
import { createRequire } from 'node:module'
import { fileURLToPath } from 'node:url'

/** What this build of the addon supports (from the C side). */
export interface NativeFeatures {
  punchHole: boolean
  seekData: boolean
  lock: boolean
  /** 'qemu-ofd': QEMU-compatible open-file-description byte locks; 'flock': whole-file flock. */
  lockKind: 'qemu-ofd' | 'flock'
  copyFileRange: boolean
  /** readCached (preadv2 with RWF_NOWAIT) is available; absent in older builds. */
  readCached?: boolean
  /** readBatch takes a write target (writeFd, writePosition); absent in older builds. */
  readBatchWrite?: boolean
  /** sendParts, waitWritable, dupSocket and shutdownSocket; absent in older builds. */
  sendParts?: boolean
}

/**
 * The system calls Node lacks (see main/engine/native/README.md). Errors are Error objects whose
 * `code` is the errno name.
 */
export interface NativeAddon {
  readonly features: NativeFeatures
  /** fallocate(PUNCH_HOLE | KEEP_SIZE): the range reads as zeros and its blocks are freed. */
  punchHole(fd: number, offset: number, length: number): void
  /** Up to `max` data extents inside [start, end), flat: [s0, e0, s1, e1, ...]. */
  dataExtents(fd: number, start: number, end: number, max: number): number[]
  /**
   * Take QEMU's lock bytes: `held` is the permissions this process uses, `unshared` those it
   * forbids others (bits: 1 consistent read, 2 write, 4 write unchanged, 8 resize). Returns
   * null, or the name of the permission another process holds or forbids.
   */
  lock(fd: number, held: number, unshared: number): string | null
  unlock(fd: number): void
  /** punchHole on the libuv thread pool; keep `fd` open until the promise settles. */
  punchHoleAsync(fd: number, offset: number, length: number): Promise<void>
  /**
   * Many preads in one thread-pool job: `pieces` holds [fd, position, targetOffset, length]
   * quadruples (at most 65536); each is read into `target` at targetOffset, zeros past the end
   * of its file. Absent in builds older than this function.
   */
  readBatch?(
    target: Uint8Array,
    pieces: Float64Array,
    writeFd?: number,
    writePosition?: number,
  ): Promise<void>
  /**
   * The same pieces read now, on this thread, from the page cache only (preadv2 RWF_NOWAIT):
   * returns how many leading pieces it completed. It stops at the first piece not all cached,
   * or once `budget` bytes are done; read the rest with readBatch or plain reads. Absent in
   * builds older than this function.
   */
  readCached?(target: Uint8Array, pieces: Float64Array, budget: number): number
  /**
   * Write `items` ([kind, a, b] triples: kind >= 0 is b bytes of file `kind` at position a, sent
   * with sendfile; -1 is b zero bytes; -2 is the whole of buffers[a], b bytes long) to the
   * non-blocking stream socket `socket`, in order, in one thread-pool job. Resolves with the
   * bytes sent: all of them, or fewer when the socket stayed full for `waitMs` (then
   * {@link waitWritable} and send the rest). A file range that cannot be read (sendfile and
   * pread both fail) is sent as zeros and reported: the promise then resolves with
   * [sent, item, errno, item, errno, ...]. Absent in older builds.
   */
  sendParts?(
    socket: number,
    items: Float64Array,
    buffers: Uint8Array[],
    waitMs: number,
  ): Promise<number | number[]>
  /** Resolves once `socket` takes bytes again (or failed), watched by the event loop. */
  waitWritable?(socket: number): Promise<void>
  /** A close-on-exec duplicate of a socket descriptor (close it with fs.closeSync). */
  dupSocket?(fd: number): number
  /** shutdown(SHUT_RDWR), waking a send or wait on the socket; errors are ignored. */
  shutdownSocket?(fd: number): void
  /** copy_file_range on the libuv thread pool; resolves with the bytes copied. */
  copyFileRange(
    input: number,
    inputOffset: number,
    output: number,
    outputOffset: number,
    length: number,
  ): Promise<number>
}

/** Whether the addon loaded, from where, or why not. */
export interface NativeStatus {
  loaded: boolean
  path: string | null
  /** Why it did not load (not built, wrong ABI, ...). */
  reason: string | null
  features: NativeFeatures | null
}

const FILE_NAME = 'addcow_native.node'

/** Where the built addon may be: beside the sources (tsx, vitest) or above a bundle in out/. */
function candidates(): string[] {
  const list: string[] = []
  const explicit = process.env.ADDCOW_NATIVE_PATH
  if (explicit) list.push(explicit)
  for (const relative of [
    `./build/Release/${FILE_NAME}`,
    // out/cli/addcow.cjs (the CLI's commands), out/main/index.js (Electron's main process)
    `../../main/engine/native/build/Release/${FILE_NAME}`,
    `../main/engine/native/build/Release/${FILE_NAME}`,
    `./${FILE_NAME}`,
  ]) {
    try {
      list.push(fileURLToPath(new URL(relative, import.meta.url)))
    } catch {
      // not a file: URL (a bundler rewrote import.meta.url); try the next one
    }
  }
  return list
}

let cached: { addon: NativeAddon | null; status: NativeStatus } | null = null

function isAddon(value: unknown): value is NativeAddon {
  const addon = value as Partial<NativeAddon> | null
  return (
    typeof addon?.punchHole === 'function' &&
    typeof addon.dataExtents === 'function' &&
    typeof addon.lock === 'function' &&
    typeof addon.unlock === 'function' &&
    typeof addon.copyFileRange === 'function' &&
    typeof addon.punchHoleAsync === 'function' &&
    typeof addon.features === 'object'
  )
}

function load(): { addon: NativeAddon | null; status: NativeStatus } {
  if (process.env.ADDCOW_NO_NATIVE === '1') {
    return {
      addon: null,
      status: {
        loaded: false,
        path: null,
        reason: 'disabled by ADDCOW_NO_NATIVE=1',
        features: null,
      },
    }
  }
  const require = createRequire(import.meta.url)
  const tried: string[] = []
  for (const path of candidates()) {
    if (!existsSync(path)) {
      tried.push(path)
      continue
    }
    try {
      const module: unknown = require(path)
      if (!isAddon(module)) throw new Error('it does not export the expected functions')
      return {
        addon: module,
        status: { loaded: true, path, reason: null, features: module.features },
      }
    } catch (error) {
      const reason = `${path} failed to load: ${error instanceof Error ? error.message : String(error)}; rebuild it with npm run build:native`
      return { addon: null, status: { loaded: false, path, reason, features: null } }
    }
  }
  return {
    addon: null,
    status: {
      loaded: false,
      path: null,
      reason: `the native addon is not built (looked for ${tried[0] ?? FILE_NAME}); run npm run build:native`,
      features: null,
    },
  }
}

/** The addon, or null when it is not built (the engine then uses slower portable fallbacks). */
export function native(): NativeAddon | null {
  cached ??= load()
  return cached.addon
}

/** Whether the addon loaded, and why not; `addcow check` and the tests report this. */
export function nativeStatus(): NativeStatus {
  cached ??= load()
  return cached.status
}

let readBatchEnabled = process.env.ADDCOW_NO_READ_BATCH !== '1'

/**
 * Use batched reads when the addon has them (default), or the portable one-read-per-run path.
 * ADDCOW_NO_READ_BATCH=1 turns them off at start; tests switch between both paths to prove
 * they return the same bytes.
 */
export function setReadBatchEnabled(enabled: boolean): void {
  readBatchEnabled = enabled
}

/** The addon's readBatch, bound, or null when it is missing or switched off. */
export function readBatchFunction():
  ((target: Uint8Array, pieces: Float64Array) => Promise<void>) | null {
  if (!readBatchEnabled) return null
  if (boundReadBatch === undefined) {
    const addon = native()
    boundReadBatch = addon?.readBatch ? addon.readBatch.bind(addon) : null
  }
  return boundReadBatch
}

/** readBatch bound once (readInto asks for it on every read); undefined until first asked. */
let boundReadBatch: ((target: Uint8Array, pieces: Float64Array) => Promise<void>) | null | undefined

/** readBatch with a write target (see {@link readBatchWriteFunction}). */
export type ReadBatchWrite = (
  target: Uint8Array,
  pieces: Float64Array,
  writeFd: number,
  writePosition: number,
) => Promise<void>

/**
 * The addon's readBatch with a write target, bound: reads the pieces into `target`, then
 * writes all of `target` to `writeFd` at `writePosition`, in one thread-pool job. Null when the
 * addon lacks it or batched reads are switched off.
 */
export function readBatchWriteFunction(): ReadBatchWrite | null {
  if (!readBatchEnabled) return null
  if (boundReadBatchWrite === undefined) {
    const addon = native()
    boundReadBatchWrite =
      addon?.readBatch && addon.features.readBatchWrite ? addon.readBatch.bind(addon) : null
  }
  return boundReadBatchWrite
}

let boundReadBatchWrite: ReadBatchWrite | null | undefined

/** Signature of the addon's readCached (see {@link NativeAddon.readCached}). */
export type ReadCached = (target: Uint8Array, pieces: Float64Array, budget: number) => number

let readCachedEnabled = process.env.ADDCOW_NO_READ_CACHED !== '1'
let boundReadCached: ReadCached | null | undefined

/**
 * Try reads from the page cache on the calling thread first (default), or always go through
 * the thread pool. ADDCOW_NO_READ_CACHED=1 turns the fast path off at start; tests switch
 * between both paths to prove they return the same bytes.
 */
export function setReadCachedEnabled(enabled: boolean): void {
  readCachedEnabled = enabled
}

/** The addon's readCached, bound, or null when it is missing, unsupported or switched off. */
export function readCachedFunction(): ReadCached | null {
  if (!readCachedEnabled) return null
  if (boundReadCached === undefined) {
    const addon = native()
    boundReadCached =
      addon?.readCached && addon.features.readCached ? addon.readCached.bind(addon) : null
  }
  return boundReadCached
}

/** The addon's zero-copy socket functions (see {@link NativeAddon.sendParts}). */
export interface ZeroCopySend {
  sendParts(
    socket: number,
    items: Float64Array,
    buffers: Uint8Array[],
    waitMs: number,
  ): Promise<number | number[]>
  waitWritable(socket: number): Promise<void>
  dupSocket(fd: number): number
  shutdownSocket(fd: number): void
}

let zeroCopyEnabled = process.env.ADDCOW_NO_ZERO_COPY !== '1'
let boundZeroCopy: ZeroCopySend | null | undefined

/**
 * Send file data to sockets with sendfile, without copying it through this process (default),
 * or read it into buffers first. ADDCOW_NO_ZERO_COPY=1 turns zero-copy sends off at start;
 * tests switch between both to prove the replies are the same.
 */
export function setZeroCopyEnabled(enabled: boolean): void {
  zeroCopyEnabled = enabled
}

/** The addon's zero-copy send functions, bound, or null when missing or switched off. */
export function zeroCopySend(): ZeroCopySend | null {
  if (!zeroCopyEnabled) return null
  if (boundZeroCopy === undefined) {
    const addon = native()
    boundZeroCopy =
      addon?.features.sendParts &&
      addon.sendParts &&
      addon.waitWritable &&
      addon.dupSocket &&
      addon.shutdownSocket
        ? {
            sendParts: addon.sendParts.bind(addon),
            waitWritable: addon.waitWritable.bind(addon),
            dupSocket: addon.dupSocket.bind(addon),
            shutdownSocket: addon.shutdownSocket.bind(addon),
          }
        : null
  }
  return boundZeroCopy
}
