import { read, write, writeSync } from 'node:fs'
import { open, type FileHandle } from 'node:fs/promises'
import { EngineError, wrapIoError } from './errors'
import { readBatchFunction, readBatchWriteFunction, readCachedFunction } from './native/index'

/** Largest single read or write issued to the OS; bigger requests are split. */
const MAX_IO = 8 * 1024 * 1024
/**
 * Most bytes one read copies from the page cache on the calling thread (see
 * {@link BlockFile.readCachedAt}): a few milliseconds of the event loop at worst.
 */
export const CACHED_READ_BUDGET = 8 * 1024 * 1024

/** The one piece of a single-range readCached call (the call is synchronous: reused). */
const onePiece = new Float64Array(4)
/**
 * Reads at least this long are split in two: one half copied on this thread while a
 * thread-pool job copies the other, so a lone sequential reader uses two cores.
 */
const SPLIT_READ_MIN = 512 * 1024
/** Thread-pool jobs of a batched read carry at least this many bytes each. */
const BATCH_MIN_BYTES = 256 * 1024
/** Pieces per native batch job (the addon accepts up to 65536). */
const BATCH_MAX_PIECES = 16384
/** Thread-pool jobs one batched read is spread over when nothing came from the cache. */
const BATCH_JOBS = 8
/** Largest read copied on the calling thread while a server runs (see {@link useServerReads}). */
const SERVER_INLINE_READ = 64 * 1024
/** Servers (connections) in this process that asked for {@link useServerReads}. */
let servers = 0

/** Largest read that is copied from the page cache on the calling thread just now. */
function inlineReadLimit(): number {
  return servers > 0 ? SERVER_INLINE_READ : CACHED_READ_BUDGET
}

/**
 * While the returned release function has not been called, reads longer than 64 KiB go to
 * the thread pool whole instead of being copied (in part) on the calling thread. A server
 * calls it for each client: its thread has requests to parse and replies to send, and with
 * many requests in flight the thread pool already keeps every core copying (measured with
 * tests/bench/nbd-throughput.ts: nbdcopy reads lost about 15% with big inline copies). Small
 * reads still come from the page cache inline, which spares their thread-pool round trips.
 */
export function useServerReads(): () => void {
  servers++
  let released = false
  return () => {
    if (released) return
    released = true
    servers--
  }
}

/**
 * Fill `target` from `position` of the file `fd` now, on this thread, if all of it is in the
 * page cache and it is short enough to copy here ({@link BlockFile.readCachedAt}); false, with
 * `target` partly written, otherwise. Throws the OS error (errno `code`) of a failed read.
 */
export function readCachedPiece(fd: number, target: Uint8Array, position: number): boolean {
  const readCached = readCachedFunction()
  if (!readCached || target.length > inlineReadLimit() || target.length === 0) return false
  onePiece[0] = fd
  onePiece[1] = position
  onePiece[2] = 0
  onePiece[3] = target.length
  return readCached(target, onePiece, target.length) === 1
}

/**
 * Read pieces of plain files into `target` with the native addon: `pieces` is flat
 * [fd, position, targetOffset, length] quadruples, zeros past a file's end.
 *
 * What the page cache holds is copied here (readCached), which costs less than a thread-pool
 * round trip. A big read is split in half by bytes: the second half goes to one thread-pool job
 * at once, and the first is copied here while that job runs, so two cores do the copies that a
 * read from a warm overlay costs. Whatever the cache did not hold goes to the thread pool too.
 * While a server runs ({@link useServerReads}), reads longer than 64 KiB go to the thread pool
 * whole, in a few jobs. Returns null when the addon has no batched reads
 * (or they are switched off): read piece by piece with {@link BlockFile.readAt} then. Keep the
 * files open until the promise settles.
 */
export function readFilePieces(target: Uint8Array, pieces: number[]): Promise<void> | null {
  const readBatch = readBatchFunction()
  if (!readBatch) return null
  const readCached = readCachedFunction()
  let total = 0
  for (let index = 3; index < pieces.length; index += 4) total += pieces[index]!
  const inline = readCached !== null && total <= inlineReadLimit()
  // Pieces [0, head) are tried from the page cache here; [head, end) go to the thread pool.
  let head = inline ? pieces.length : 0
  if (inline && total >= SPLIT_READ_MIN) {
    // Cut at half the bytes, splitting the piece that straddles the middle.
    let bytes = 0
    for (let index = 0; index < pieces.length; index += 4) {
      const length = pieces[index + 3]!
      if (bytes + length > total / 2) {
        const first = Math.floor(total / 2) - bytes
        if (first > 0) {
          const [fd, position, offset] = [pieces[index]!, pieces[index + 1]!, pieces[index + 2]!]
          pieces.splice(
            index,
            4,
            fd,
            position,
            offset,
            first,
            fd,
            position + first,
            offset + first,
            length - first,
          )
          index += 4
        }
        head = index
        break
      }
      bytes += length
    }
  }
  const all = Float64Array.from(pieces)
  const jobs: Promise<void>[] = []
  const queue = (from: number, to: number, budget: number): void => {
    let next = from
    while (next < to) {
      let stop = next
      let bytes = 0
      while (stop < to && bytes < budget && stop - next < BATCH_MAX_PIECES * 4) {
        bytes += all[stop + 3]!
        stop += 4
      }
      jobs.push(readBatch(target, all.subarray(next, stop)))
      next = stop
    }
  }
  const jobBudget = Math.max(BATCH_MIN_BYTES, Math.ceil(total / BATCH_JOBS))
  // The second half of a split read starts on the thread pool at once, as one job.
  queue(head, all.length, inline ? Number.POSITIVE_INFINITY : jobBudget)
  const done =
    head > 0 && readCached ? readCached(target, all.subarray(0, head), CACHED_READ_BUDGET) * 4 : 0
  queue(done, head, jobBudget)
  return jobs.length === 0 ? Promise.resolve() : Promise.all(jobs).then(() => undefined)
}

/**
 * Writes up to this long are made on the calling thread ({@link BlockFile.writeAt}): a small
 * write into the page cache costs a few microseconds, a thread-pool round trip several times
 * that (a futex wake, a context switch each way), which is most of what a 4 KiB NBD write cost
 * the server (measured with tests/bench/nbd-throughput.ts). Not larger: a 64 KiB
 * copy-on-write fill costs tens of microseconds of page allocation and copy, which the thread
 * pool spreads over the cores while this thread serves other requests.
 */
const INLINE_WRITE_MAX = 16 * 1024
/**
 * An inline write that took longer than this means the kernel made it wait (dirty-page
 * throttling, the journal): writes then go back to the thread pool for
 * {@link INLINE_WRITE_PAUSE_MS}, so the event loop is held up by at most one slow write a
 * pause. ext4 does not support RWF_NOWAIT for buffered writes, so waiting cannot be refused
 * up front the way cached reads do. Well above a scheduler time slice, so that being preempted
 * on a busy machine does not count as waiting.
 */
const SLOW_INLINE_WRITE_MS = 10
const INLINE_WRITE_PAUSE_MS = 250

let inlineWritesEnabled = process.env.ADDCOW_NO_INLINE_WRITE !== '1'
/**
 * performance.now() before which small writes go to the thread pool (after a slow one). The
 * global, not node:perf_hooks: importing that module costs every start-up (issue 15).
 */
let inlineWritesPausedUntil = 0

/**
 * Make small writes on the calling thread (default), or always on the thread pool.
 * ADDCOW_NO_INLINE_WRITE=1 turns inline writes off at start; tests switch between both paths.
 */
export function setInlineWritesEnabled(enabled: boolean): void {
  inlineWritesEnabled = enabled
  inlineWritesPausedUntil = 0
}

/** Whether a write of `length` bytes is made on the calling thread just now. */
function writesInline(length: number): boolean {
  return (
    inlineWritesEnabled &&
    length <= INLINE_WRITE_MAX &&
    (inlineWritesPausedUntil === 0 || performance.now() >= inlineWritesPausedUntil)
  )
}

/** pwrite all of `data` at `position` on this thread; pauses inline writes if it was slow. */
function writeInline(fd: number, data: Uint8Array, position: number): void {
  const start = performance.now()
  let done = 0
  while (done < data.length) done += writeSync(fd, data, done, data.length - done, position + done)
  const end = performance.now()
  if (end - start > SLOW_INLINE_WRITE_MS) inlineWritesPausedUntil = end + INLINE_WRITE_PAUSE_MS
}

/** One call that changes a file or its durability, as a {@link FileObserver} sees it. */
export type FileEvent =
  | { kind: 'write'; path: string; position: number; data: Uint8Array }
  | { kind: 'truncate'; path: string; length: number }
  /** `metadata`: fsync (data and length) rather than fdatasync. */
  | { kind: 'sync'; path: string; metadata: boolean }

/**
 * A test seam on the file layer: sees every write, truncate and sync of every {@link BlockFile}.
 *
 * Crash tests install one to model a power cut, which page-cache-backed files never show on
 * their own (kill -9 loses nothing that reached the kernel): the observer records the writes
 * since each file's last sync, and can fail calls from a chosen point on. `before` runs just
 * before the OS call; throwing from it fails the call as an I/O error would (an EngineError
 * thrown there passes through unchanged). `after` runs once the call succeeded. The `data` of a
 * write event is the caller's buffer: copy it to keep it. Never installed in production; when
 * none is installed, each call pays one null check.
 */
export interface FileObserver {
  before?(event: FileEvent): void
  after?(event: FileEvent): void
}

let observer: FileObserver | null = null

/**
 * Install `next` as the process-wide {@link FileObserver} (null removes it); returns the one it
 * replaces. Tests only.
 */
export function setFileObserver(next: FileObserver | null): FileObserver | null {
  const previous = observer
  observer = next
  return previous
}

/**
 * Run `change`, a native call that changes bytes of the file at `path` from `position` without
 * a write call (copy_file_range, a punched hole), in view of the installed {@link FileObserver}
 * as a write of the bytes it leaves there, which `contents` gives. Without an observer (always,
 * in production) this is `change()`; with one, a power-cut model sees every change of a file,
 * and does not drop data the kernel had.
 */
export async function observeNativeWrite<T>(
  path: string,
  position: number,
  contents: () => Promise<Uint8Array>,
  change: () => Promise<T>,
): Promise<T> {
  const watcher = observer
  if (!watcher) return change()
  const event: FileEvent = { kind: 'write', path, position, data: await contents() }
  watcher.before?.(event)
  const result = await change()
  watcher.after?.(event)
  return result
}

/**
 * Positional I/O on one open file, with the path kept for error messages.
 *
 * Reads past the end of the file return zeros (a short file behaves like a sparse one); every
 * OS error becomes an EngineError naming the file.
 */
export class BlockFile {
  private constructor(
    readonly path: string,
    private readonly handle: FileHandle,
    readonly writable: boolean,
  ) {}

  /** Open `path` read-only, or read-write when `writable`. */
  static async open(path: string, writable: boolean): Promise<BlockFile> {
    try {
      const handle = await open(path, writable ? 'r+' : 'r')
      return new BlockFile(path, handle, writable)
    } catch (error) {
      throw wrapIoError(error, path, writable ? 'open for writing' : 'open')
    }
  }

  /** Create `path`, failing if it exists (`exclusive`) or truncating nothing otherwise. */
  static async create(path: string, exclusive: boolean): Promise<BlockFile> {
    try {
      const handle = await open(path, exclusive ? 'wx+' : 'a+')
      await handle.close()
      return await BlockFile.open(path, true)
    } catch (error) {
      throw wrapIoError(error, path, 'create')
    }
  }

  get fd(): number {
    return this.handle.fd
  }

  /**
   * Fill `target` from position `position` now, on this thread, if all of it is in the page
   * cache (preadv2 with RWF_NOWAIT, through the native addon) and it is at most
   * {@link CACHED_READ_BUDGET} bytes; returns false, with `target` partly written, when it is
   * not, or when the addon is missing or the fast path is switched off. A read from the page
   * cache is a memory copy: doing it here saves the thread-pool round trip, which costs more
   * than the copy for small reads.
   */
  readCachedAt(target: Uint8Array, position: number): boolean {
    try {
      return readCachedPiece(this.handle.fd, target, position)
    } catch (error) {
      throw wrapIoError(error, this.path, `read ${target.length} bytes at offset ${position} of`)
    }
  }

  /** Fill `target` from position `position`; zeros past the end of the file. */
  async readAt(target: Uint8Array, position: number): Promise<void> {
    if (this.readCachedAt(target, position)) return
    let done = 0
    try {
      while (done < target.length) {
        const chunk = Math.min(target.length - done, MAX_IO)
        const bytesRead = await positional(
          read,
          this.handle.fd,
          target,
          done,
          chunk,
          position + done,
        )
        if (bytesRead === 0) {
          target.fill(0, done)
          return
        }
        done += bytesRead
      }
    } catch (error) {
      throw wrapIoError(error, this.path, `read ${target.length} bytes at offset ${position} of`)
    }
  }

  /**
   * Write all of `data` at `position`: on this thread when it is small (see
   * {@link INLINE_WRITE_MAX}), else on the thread pool.
   */
  async writeAt(data: Uint8Array, position: number): Promise<void> {
    let done = 0
    const watcher = observer
    const event: FileEvent | null = watcher
      ? { kind: 'write', path: this.path, position, data }
      : null
    try {
      if (event) watcher?.before?.(event)
      if (writesInline(data.length)) {
        writeInline(this.handle.fd, data, position)
        done = data.length
      }
      while (done < data.length) {
        const chunk = Math.min(data.length - done, MAX_IO)
        const bytesWritten = await positional(
          write,
          this.handle.fd,
          data,
          done,
          chunk,
          position + done,
        )
        done += bytesWritten
      }
      if (event) watcher?.after?.(event)
    } catch (error) {
      throw wrapIoError(error, this.path, `write ${data.length} bytes at offset ${position} of`)
    }
  }

  /**
   * Read `pieces` (flat [fd, position, targetOffset, length] quadruples of plain files, zeros
   * past a file's end) into `buffer`, then write all of `buffer` at `position` of this file, in
   * one thread-pool job (the addon's readBatch with a write target). A copy-on-write fill is
   * then one round trip with no copy of the base's bytes on the calling thread. Returns null
   * when the addon lacks it, batched reads are off, or a {@link FileObserver} is installed (its
   * write event needs the bytes before the call): the caller reads and writes itself then.
   */
  readPiecesThenWriteAt(
    buffer: Uint8Array,
    pieces: number[],
    position: number,
  ): Promise<void> | null {
    const readBatchWrite = readBatchWriteFunction()
    if (!readBatchWrite || observer) return null
    const failed = (error: unknown): never => {
      throw wrapIoError(
        error,
        this.path,
        `fill and write ${buffer.length} bytes at offset ${position} of`,
      )
    }
    try {
      return readBatchWrite(buffer, Float64Array.from(pieces), this.handle.fd, position).catch(
        failed,
      )
    } catch (error) {
      // Arguments the addon refuses (a closed file's descriptor) throw before any job starts.
      return Promise.reject(
        wrapIoError(
          error,
          this.path,
          `fill and write ${buffer.length} bytes at offset ${position} of`,
        ),
      )
    }
  }

  /** The file's length; SIZE_LIMIT beyond 2^53 - 1 bytes, which this engine cannot address. */
  async length(): Promise<number> {
    let size: bigint
    try {
      size = (await this.handle.stat({ bigint: true })).size
    } catch (error) {
      throw wrapIoError(error, this.path, 'stat')
    }
    if (size > BigInt(Number.MAX_SAFE_INTEGER)) {
      throw new EngineError(
        'SIZE_LIMIT',
        `${this.path} is ${size} bytes long, more than this tool can address (2^53 - 1).`,
        { path: this.path, field: 'file length', value: size.toString() },
      )
    }
    return Number(size)
  }

  /** Bytes allocated on disk (st_blocks * 512). */
  async allocatedBytes(): Promise<number> {
    try {
      return (await this.handle.stat()).blocks * 512
    } catch (error) {
      throw wrapIoError(error, this.path, 'stat')
    }
  }

  /** Set the file length (grows sparsely). */
  async truncate(length: number): Promise<void> {
    const watcher = observer
    const event: FileEvent | null = watcher ? { kind: 'truncate', path: this.path, length } : null
    try {
      if (event) watcher?.before?.(event)
      await this.handle.truncate(length)
      if (event) watcher?.after?.(event)
    } catch (error) {
      throw wrapIoError(error, this.path, `set the length to ${length} of`)
    }
  }

  /** fdatasync: the data written so far is durable. */
  async datasync(): Promise<void> {
    const watcher = observer
    const event: FileEvent | null = watcher
      ? { kind: 'sync', path: this.path, metadata: false }
      : null
    try {
      if (event) watcher?.before?.(event)
      await this.handle.datasync()
      if (event) watcher?.after?.(event)
    } catch (error) {
      throw wrapIoError(error, this.path, 'sync')
    }
  }

  /** fsync: data and file metadata (length) are durable. */
  async sync(): Promise<void> {
    const watcher = observer
    const event: FileEvent | null = watcher
      ? { kind: 'sync', path: this.path, metadata: true }
      : null
    try {
      if (event) watcher?.before?.(event)
      await this.handle.sync()
      if (event) watcher?.after?.(event)
    } catch (error) {
      throw wrapIoError(error, this.path, 'sync')
    }
  }

  async close(): Promise<void> {
    try {
      await this.handle.close()
    } catch (error) {
      throw wrapIoError(error, this.path, 'close')
    }
  }
}

/**
 * One pread or pwrite through the callback API, which costs the event loop far less per call
 * than FileHandle.read/write (no FileHandle bookkeeping, no promise made in C++).
 */
function positional(
  call: typeof read | typeof write,
  fd: number,
  buffer: Uint8Array,
  offset: number,
  length: number,
  position: number,
): Promise<number> {
  return new Promise((resolve, reject) => {
    ;(call as typeof read)(fd, buffer, offset, length, position, (error, bytes) =>
      error ? reject(error) : resolve(bytes),
    )
  })
}

let zeroBuffer = Buffer.alloc(0)

/** A shared read-only buffer of at least `length` zero bytes (never write into it). */
export function zeroes(length: number): Buffer {
  if (zeroBuffer.length < length) {
    zeroBuffer = Buffer.alloc(Math.max(length, 1024 * 1024))
  }
  return zeroBuffer.subarray(0, length)
}
