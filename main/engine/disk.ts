import type { ImageInfo, NameResolution } from '../../shared/image-types'
import type { NamePolicy } from './names'

/**
 * Where a range of a disk's guest view comes from, as {@link Disk.blockStatus} reports it.
 *
 * `depth` 0 is the disk itself, n its n-th backing layer. `present` is false when no layer
 * allocates the range (it reads as zeros); `zero` is true when the range is known to read as
 * zeros (a hole, or unallocated everywhere).
 */
export interface BlockExtent {
  offset: number
  length: number
  depth: number
  present: boolean
  zero: boolean
}

/** What a disk can do; ask before use, so callers can refuse early with NOT_CAPABLE. */
export interface DiskCapabilities {
  write: boolean
  /** writeZeroes is cheaper than writing a zero buffer (no data is written for whole clusters). */
  fastZero: boolean
  /** discard actually releases space. */
  discard: boolean
  /** blockStatus reports real allocation (not just "everything is data"). */
  blockStatus: boolean
  /** Flushes on one handle are visible to every other handle on the same files. */
  multiConn: boolean
}

/** Options for one write request. */
export interface WriteOptions {
  /** Force Unit Access: the data (and the metadata exposing it) is durable when the call returns. */
  fua?: boolean
}

/** Options of every long-running engine operation (DESIGN.md, "The engine"). */
export interface OperationOptions {
  signal?: AbortSignal
  onProgress?: (done: number, total: number) => void
}

/**
 * A disk: the guest view of one image, with its backing chain below it.
 *
 * Offsets and lengths are bytes, and callers keep `offset + length <= size`; a disk throws
 * OUT_OF_RANGE otherwise. Reads of ranges no layer allocates return zeros. Concurrent requests
 * are allowed; the driver orders what it must.
 */
export interface Disk {
  /** Absolute path of the file the disk was opened from. */
  readonly path: string
  /** Driver name: 'add-cow', 'raw', 'qcow2', 'cow', ... */
  readonly format: string
  /** Virtual size in bytes. */
  readonly size: number
  readonly readOnly: boolean
  readonly capabilities: DiskCapabilities
  /** Granularity of allocation in bytes (cluster size; 512 for sector formats; 1 for raw). */
  readonly allocationUnit: number
  /** The next disk down the chain, or null. */
  readonly backing: Disk | null

  /** Fill `target` with the guest data starting at `offset`. */
  readInto(target: Uint8Array, offset: number): Promise<void>
  /** Read `length` bytes at `offset` into a new buffer. */
  read(offset: number, length: number): Promise<Buffer>
  write(offset: number, data: Uint8Array, options?: WriteOptions): Promise<void>
  /** Make the range read as zeros. */
  writeZeroes(offset: number, length: number, options?: WriteOptions): Promise<void>
  /** Hint that the range is no longer needed; its content is unspecified afterwards only where
   * the format allows (add-cow keeps the guest view unchanged). */
  discard(offset: number, length: number): Promise<void>
  /** Make every completed write durable, data before the metadata that exposes it. */
  flush(): Promise<void>
  /** Extents covering exactly [offset, offset + length), merged where adjacent and alike. */
  blockStatus(offset: number, length: number): Promise<BlockExtent[]>
  /** What `addcow info` shows for this layer alone (not its backing chain). */
  info(): Promise<ImageInfo>
  /** Flush and release every file of this disk and of its backing chain. */
  close(): Promise<void>
}

/** Everything a driver needs to open a file as a chain member. */
export interface OpenOptions {
  readOnly: boolean
  /** Name policy applied to every name the file stores. */
  policy: NamePolicy
  /** Depth of this file in the chain (0 = top). */
  depth: number
  /** Resolved real paths already open above this file, to detect loops. */
  visited: ReadonlySet<string>
  /**
   * Inspect only: names the policy refuses, and missing files, are recorded instead of thrown,
   * and `openBacking` returns null for them. Used by `info`, never for reading data.
   */
  lenient: boolean
  /** Open a backing file named by `namingFile` (applies the policy, loops, depth, format). */
  openBacking: (namingFile: string, storedName: string, format: string) => Promise<Disk | null>
  /**
   * Judge (and claim for loop detection) a data file named by `namingFile`, such as add-cow's
   * image file. Returns the resolution; throws unless followable (or lenient).
   */
  judgeDataFile: (namingFile: string, storedName: string, format: string) => Promise<NameResolution & { realPath: string }>
}

/** A format's driver: a probe, an opener and (where supported) a creator. */
export interface FormatDriver {
  readonly name: string
  /** What the format supports, before any file is opened. */
  readonly features: {
    create: boolean
    write: boolean
    backing: boolean
  }
  /**
   * Score 0..100 of how sure the driver is that `head` (the first bytes of the file, up to
   * 4096) starts a file of its format; 0 means "not mine". Raw never probes.
   */
  probe(head: Uint8Array, fileLength: number): number
  open(path: string, options: OpenOptions): Promise<Disk>
}
