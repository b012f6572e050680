import type { Disk } from '../engine/disk'
import { layerFiles } from '../engine/disk'
import { filesIdentity, realPath, type FilesIdentity } from '../engine/fs'
import type { Library } from '../engine/library'
import { chainOf, openImage } from '../engine/open'

/** Images kept open at once, least recently used closed first. */
const CACHE_LIMIT = 4
/** An image nobody asked about for this long is closed. */
const IDLE_MS = 15_000
/**
 * A file changed less than this long before the image was opened may have changed while it
 * was being read: such an image is read once and closed, never kept.
 */
const QUIET_MS = 2_000

interface KeptImage {
  disk: Disk
  /** The identity of every file of the chain, and of the library, when the disk was opened. */
  identity: string
  users: number
  evicted: boolean
  timer: ReturnType<typeof setTimeout> | null
}

/**
 * The disks the `image:*` map channels read (allocation sums, map pages, the next written
 * range), so that an overlay's allocation summary is built once per bitmap rather than once per
 * request:
 *
 * - an image this process serves (an NBD export started from the app) is read through the
 *   export's own open disk, whose bitmap and summary every write keeps current, unflushed
 *   writes included;
 * - any other image is opened read-only and kept open between requests (a few at a time,
 *   closed when idle) for as long as none of its chain's files, nor the library (whose trusted
 *   names decide what the chain follows), changes: each request compares their identity
 *   (device, inode, size, modification and change times) with the one taken when it was opened,
 *   and opens it again when they differ. An image whose files changed just before it was opened
 *   is not kept (it may have changed during the open).
 */
export class ImageReaders {
  private readonly served = new Map<string, Disk>()
  private readonly kept = new Map<string, KeptImage>()

  private readonly limit: number
  private readonly idleMs: number
  private readonly quietMs: number

  constructor(
    private readonly library: Library,
    options: { limit?: number; idleMs?: number; quietMs?: number } = {},
  ) {
    this.limit = options.limit ?? CACHE_LIMIT
    this.idleMs = options.idleMs ?? IDLE_MS
    this.quietMs = options.quietMs ?? QUIET_MS
  }

  /** `disk` is served by this process until the returned function is called. */
  serving(disk: Disk): () => void {
    let released = false
    let key: string | null = null
    void realPath(disk.path).then((path) => {
      if (released) return
      key = path
      this.served.set(path, disk)
    })
    return () => {
      released = true
      if (key !== null && this.served.get(key) === disk) this.served.delete(key)
    }
  }

  /** Run `work` on the image at `path`, opened read-only (or served here). */
  async read<T>(path: string, work: (disk: Disk) => Promise<T>): Promise<T> {
    const key = await realPath(path)
    const live = this.served.get(key)
    if (live) return work(live)
    let entry = this.kept.get(key)
    if (entry && !entry.evicted && (await this.identity(entry.disk)) !== entry.identity) {
      this.evict(key, entry)
      entry = undefined
    }
    if (!entry || entry.evicted) {
      const opened = Date.now()
      const disk = await openImage(path, { readOnly: true, policy: await this.library.policy() })
      let identity: FilesIdentity
      try {
        identity = await this.identityOf(disk)
      } catch (error) {
        await disk.close().catch(() => undefined)
        throw error
      }
      if (identity.newest > opened - this.quietMs) {
        try {
          return await work(disk)
        } finally {
          await disk.close()
        }
      }
      entry = { disk, identity: identity.text, users: 0, evicted: false, timer: null }
      const previous = this.kept.get(key)
      if (previous) this.evict(key, previous)
      this.kept.set(key, entry)
      this.trim()
    }
    const current = entry
    current.users++
    if (current.timer) clearTimeout(current.timer)
    current.timer = null
    // Most recently used last: Map keeps insertion order.
    this.kept.delete(key)
    if (!current.evicted) this.kept.set(key, current)
    try {
      return await work(current.disk)
    } finally {
      current.users--
      if (current.evicted) this.closeWhenUnused(current)
      else if (current.users === 0) {
        current.timer = setTimeout(() => this.evict(key, current), this.idleMs)
        current.timer.unref?.()
      }
    }
  }

  /** Close every kept image (those in use close when their request ends). */
  async closeAll(): Promise<void> {
    for (const [key, entry] of [...this.kept]) this.evict(key, entry)
  }

  private trim(): void {
    for (const [key, entry] of this.kept) {
      if (this.kept.size <= this.limit) break
      this.evict(key, entry)
    }
  }

  private evict(key: string, entry: KeptImage): void {
    if (this.kept.get(key) === entry) this.kept.delete(key)
    entry.evicted = true
    if (entry.timer) clearTimeout(entry.timer)
    entry.timer = null
    this.closeWhenUnused(entry)
  }

  private closeWhenUnused(entry: KeptImage): void {
    if (entry.users === 0) void entry.disk.close().catch(() => undefined)
  }

  private async identity(disk: Disk): Promise<string | null> {
    return this.identityOf(disk).then(
      (identity) => identity.text,
      () => null,
    )
  }

  /** The identity of the chain's files and the library's, and the newest change among them. */
  private async identityOf(disk: Disk): Promise<FilesIdentity> {
    return filesIdentity([
      ...chainOf(disk).flatMap((layer) => layerFiles(layer)),
      this.library.file,
    ])
  }
}
