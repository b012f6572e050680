import type { ImageInfo, NameResolution } from '../../shared/image-types'
import type { CheckContext, FormatCheck } from './check-report'
import type { BlockFile } from './file'
import type { NamePolicy } from './names'
import { EngineError } from './errors'

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
 * A backing file as an image stores it: the name exactly as written (relative names are
 * relative to the image's folder) and the format it records, or null where the format records
 * none (QEMU cow, the 2011-2012 add-cow drafts, qcow2 without the extension).
 */
export interface BackingLink {
  name: string
  format: string | null
}

/**
 * Where a range of the guest view lies in plain files ({@link Disk.mapFiles}), for a server
 * that sends it with sendfile instead of reading it into memory.
 */
export interface FileMapping {
  /**
   * Flat [fd, position, length] triples in guest order covering the range exactly: `length`
   * bytes of file `fd` at `position` (zeros past the file's end), or `length` zero bytes where
   * fd is -1.
   */
  pieces: number[]
  /**
   * Call once the bytes were sent (or will not be): until then the files stay open and the
   * mapping stays true (a live disk counts it as a read in flight).
   */
  release(): void
}

/** The `release` of a mapping that holds nothing. */
export const HOLDS_NOTHING = (): void => undefined

/** Visits runs of equal allocation: units [first, stop) of {@link Disk.allocationUnit} bytes. */
export type AllocationVisitor = (first: number, stop: number, allocated: boolean) => void

/**
 * A disk: the guest view of one image, with its backing chain below it.
 *
 * Offsets and lengths are bytes, and callers keep `offset + length <= size`; a disk throws
 * OUT_OF_RANGE otherwise. Reads of ranges no layer allocates return zeros. Concurrent requests
 * are allowed; the driver orders what it must.
 *
 * Below the members every disk has come the optional abilities, as in QEMU's `BlockDriver`
 * (include/block/block_int-common.h) or an nbdkit filter's struct: a format offers a function
 * when it can do the thing, and generic code asks whether the function exists
 * (`disk.markAllocated?.(…)`, {@link assertAbilities}), never which class a disk is or what its
 * format is called. Allocation units are {@link allocationUnit} bytes (add-cow's clusters).
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

  /**
   * Every file this layer is made of, its own path first (add-cow: the add-cow file, then its
   * image file). Locks, fingerprints and the dependency graph cover all of them. Absent: the
   * layer is the one file at {@link path} ({@link layerFiles}).
   */
  files?(): string[]
  /** The backing file as this layer stores it, or null when it names none. */
  backingLink?(): BackingLink | null
  /**
   * The plain file that holds this layer's allocated data at guest offsets (add-cow's image
   * file; a raw file itself). Copies into and out of the layer use it directly, in the kernel.
   */
  dataFile?(): BlockFile
  /**
   * Where [offset, offset + length) of the guest view (this layer and those below) lies in
   * plain files, or null when some of it does not (a qcow2 or QEMU cow layer below) or cannot
   * be promised now. The caller reads the files itself, then calls `release`.
   */
  mapFiles?(offset: number, length: number): FileMapping | null
  /** How many allocation units this layer holds itself, of how many. */
  allocationCount?(): { allocated: number; total: number }
  /**
   * Visit the runs of equal allocation over units [first, end) (all one allocated run when the
   * layer never reads its backing).
   */
  forEachAllocationRun?(first: number, end: number, visit: AllocationVisitor): void
  /**
   * How many units of [first, end) the layer holds itself, answered from a summary kept with
   * its allocation (add-cow: the bitmap's counts per block), so it costs the same on a 1 TiB
   * disk as on a small one. All of them when the layer never reads its backing.
   */
  countAllocated?(first: number, end: number): number
  /**
   * The first run of units the layer holds inside [first, end), as [start, stop) units, or
   * null when it holds none there; found through the same summary as {@link countAllocated}.
   */
  nextAllocatedRun?(first: number, end: number): [number, number] | null
  /** Whether the layer never reads its backing file (add-cow's ALL_ALLOCATED). */
  isAllAllocated?(): boolean
  /**
   * Mark units [first, end) as held by this layer, after the caller wrote their whole data into
   * {@link dataFile}. Durable at the next flush, which syncs the data before the allocation.
   */
  markAllocated?(first: number, end: number): void
  /**
   * Make units [first, end) read from the backing file again (commit's emptying). Durable at
   * the next flush.
   */
  markUnallocated?(first: number, end: number): void
  /**
   * Record, durably, that the layer no longer reads its backing file: only once every unit is
   * allocated and flushed (add-cow: set ALL_ALLOCATED after the full bitmap).
   */
  setAllAllocated?(): Promise<void>
  /**
   * Undo {@link setAllAllocated} without changing the guest view: every unit is marked
   * allocated, then the flag is cleared. Closes the disk: the layer reads its backing file
   * again, which only a fresh open provides.
   */
  clearAllAllocatedAndClose?(): Promise<void>
  /**
   * Grow the virtual size to `size` bytes (never shrinks) and close the disk: reopen it to use
   * the new size. Commit grows a smaller base this way, as qemu-img commit does.
   */
  growAndClose?(size: number): Promise<void>
  /**
   * Shrink the virtual size to `size` bytes (never grows) and close the disk (`resize
   * --shrink`). The caller checked that only zeros are cut off; a crash midway leaves at worst
   * what `check -r` repairs.
   */
  shrinkAndClose?(size: number): Promise<void>
  /**
   * Metadata a rollback must put back besides the data and the allocation (add-cow: the
   * compatible features), as text to keep in a journal; see {@link FormatDriver.restoreState}.
   */
  savedState?(): string
  /**
   * Flush, then refuse every write from now on (`readOnly` becomes true), keeping the open
   * handle and what it holds in memory: a live snapshot turns the served top into the new
   * top's backing layer this way, without reopening it.
   */
  freeze?(): Promise<void>
}

/** The name of an optional ability of {@link Disk}. */
export type DiskAbility = {
  [Name in keyof Disk]-?: undefined extends Disk[Name] ? Name : never
}[keyof Disk]

/** What each ability lets a format do, for NOT_CAPABLE messages. */
const ABILITY_TEXT: Record<DiskAbility, string> = {
  files: 'list its files',
  backingLink: 'name a backing file',
  dataFile: 'keep its data in a plain file at guest offsets',
  mapFiles: 'tell which plain files hold its data',
  allocationCount: 'count the clusters it holds',
  forEachAllocationRun: 'tell which clusters it holds',
  countAllocated: 'count the clusters it holds in a range',
  nextAllocatedRun: 'find the next clusters it holds',
  isAllAllocated: 'tell whether it still reads its backing file',
  markAllocated: 'mark clusters as its own',
  markUnallocated: 'give clusters back to its backing file',
  setAllAllocated: 'record that it no longer reads its backing file',
  clearAllAllocatedAndClose: 'read its backing file again once flattened',
  growAndClose: 'grow',
  shrinkAndClose: 'shrink',
  savedState: 'save its metadata for a rollback',
  freeze: 'become read-only while open',
}

/** The files of one chain layer: {@link Disk.files}, or the disk's own path. */
export function layerFiles(disk: Disk): string[] {
  return disk.files?.() ?? [disk.path]
}

/**
 * Throw NOT_CAPABLE unless `disk` offers every ability in `needs`, naming the first one it
 * lacks: the one check every operation makes before it touches a file.
 */
export function assertAbilities(disk: Disk, needs: readonly DiskAbility[], doing: string): void {
  const missing = needs.find((ability) => typeof disk[ability] !== 'function')
  if (missing === undefined) return
  throw new EngineError(
    'NOT_CAPABLE',
    `${disk.path} is a ${disk.format} image, which cannot ${ABILITY_TEXT[missing]}; ${doing} works on images that can (add-cow overlays).`,
    { path: disk.path, field: 'format', value: disk.format },
  )
}

/**
 * The one file that holds `disk`'s whole guest view as raw data at guest offsets, or null: a
 * layer with a {@link Disk.dataFile} and nothing else to read (no allocation map, or every unit
 * allocated and the backing file no longer read). A raw disk's file; a flattened add-cow
 * overlay's image file. QEMU can run such a file directly, and commit copies into it in the
 * kernel.
 */
export function wholeViewFile(disk: Disk): BlockFile | null {
  if (!disk.dataFile) return null
  if (disk.isAllAllocated && !disk.isAllAllocated()) return null
  return disk.dataFile()
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
  judgeDataFile: (
    namingFile: string,
    storedName: string,
    format: string,
  ) => Promise<NameResolution & { realPath: string }>
}

/** What a driver's {@link FormatDriver.create} needs; the create operation checked the rest. */
export interface CreateImageOptions extends OperationOptions {
  /** Absolute path of the new image (it does not exist). */
  path: string
  /** Virtual size; default: the base's (or, add-cow, an existing image file's if larger). */
  size?: number
  /** The backing file: the name to store, its format, and what the operation found there. */
  backing?: BackingLink & { path: string; size: number }
  /** add-cow: the image file's name as it will be stored. */
  dataFile?: string
  /** Cluster size in bytes, where the format has clusters. */
  clusterSize?: number
}

/** What a driver's {@link FormatDriver.convertInto} needs. */
export interface ConvertIntoOptions extends OperationOptions {
  /** Absolute path of the new image; an existing file there is replaced only when complete. */
  path: string
  /** The open disk whose guest view (with its whole chain) the new image holds. */
  source: Disk
  /** Cluster size in bytes, where the format has clusters (default: the format's). */
  clusterSize?: number
}

/** What a driver's {@link FormatDriver.measure} is given. */
export interface MeasureInput {
  /** Virtual size of the new image. */
  size: number
  /** Cluster size of the new image (default: the format's). */
  clusterSize?: number
  /**
   * The bytes of guest data the new image would hold, counted in whole units of `granularity`
   * (every unit with a non-zero extent counts whole); 0 when measuring a size alone.
   */
  dataBytes(granularity: number): Promise<number>
}

/** What `addcow measure` reports, as qemu-img measure does. */
export interface MeasureResult {
  /** Bytes a new image with the measured contents needs. */
  required: number
  /** Bytes the new image needs once every cluster is written. */
  'fully-allocated': number
}

/** What a driver created: for the operation to report, trust and record. */
export interface CreatedImage {
  path: string
  size: number
  /** Every file of the new image, its own path first (as {@link Disk.files}). */
  files: string[]
  /** Files this call created (an existing image file is kept and not listed). */
  created: string[]
  clusterSize: number | null
}

/**
 * What the driver table knows of a format before its driver's module is loaded: its name, its
 * probe (a look at the magic, cheap enough to run on every file), and the facts generic code asks
 * without opening an image. Each format folder exports its own in `format.ts`; the driver
 * spreads it, so both say the same. Start-up loads these alone (issue 15).
 */
export interface FormatDescription {
  readonly name: string
  /**
   * Score 0..100 of how sure the driver is that `head` (the first bytes of the file, up to
   * 4096) starts a file of its format; 0 means "not mine". Raw never probes.
   */
  probe(head: Uint8Array, fileLength: number): number
  /**
   * File name endings this format's images usually have ('.add-cow'): a file so named that no
   * driver recognises is reported as such instead of silently read as raw.
   */
  readonly extensions?: readonly string[]
  /** QEMU's own name for the format, when `--via native` may hand the file to QEMU's driver. */
  readonly qemuFormat?: string
  /**
   * The format that supersedes this one (an earlier add-cow draft: 'add-cow'): `addcow amend
   * --upgrade` rewrites such an image in that format, keeping its data file and guest view.
   */
  readonly upgradesTo?: string
  /**
   * The layer stores its allocation in clusters a new overlay on top of it can share: a live
   * snapshot gives the new top the served top's cluster size (add-cow). Absent: the new top
   * takes the default.
   */
  readonly sharesClusterSize?: boolean
  /**
   * What a file is when no driver claims it (raw): the probe's answer when every score is 0.
   * Such a format has no magic, so a file given as it is never verified against one, and a
   * file that was probed as it may be named like another format (`info` says so).
   */
  readonly fallback?: boolean
}

/**
 * A format's driver: its description, an opener, then optional functions for what the format
 * can do without an open disk (create, check, rewrite its backing link, restore saved metadata,
 * upgrade). Ask whether a function exists before calling it; {@link driverFeatures} derives
 * the capability flags from what exists.
 */
export interface FormatDriver extends FormatDescription {
  open(path: string, options: OpenOptions): Promise<Disk>
  /** Make a new image; an error or a cancel leaves nothing behind. */
  create?(options: CreateImageOptions): Promise<CreatedImage>
  /**
   * Write a new standalone image (no backing file) at `options.path` with the guest view of
   * `options.source`, atomically: the file takes its name only when complete, and an error or
   * a cancel leaves nothing behind (`addcow convert`).
   */
  convertInto?(options: ConvertIntoOptions): Promise<void>
  /** File sizes a new image of this format needs for the given contents (`addcow measure`). */
  measure?(input: MeasureInput): Promise<MeasureResult>
  /**
   * Check the file at `path` for damage (and repair it at `context.repair`), without opening
   * its chain: the check operation adds the chain and drift, and the report.
   */
  check?(path: string, context: CheckContext): Promise<FormatCheck>
  /**
   * The backing link and data file name stored in the file at `path`, read from its header
   * alone (no chain opened): what rebase -u needs when the old base is gone.
   */
  readLinks?(path: string): Promise<{ backing: BackingLink | null; dataFile: string | null }>
  /**
   * Store a new backing link (null: none) in the file at `path`, atomically. The caller holds
   * the file's exclusive lock and has no handle open on it.
   */
  setBacking?(path: string, backing: BackingLink | null, signal?: AbortSignal): Promise<void>
  /** Put back metadata saved by {@link Disk.savedState} into the closed file at `path`. */
  restoreState?(path: string, state: string): Promise<void>
}

/** What a driver can do, derived from the functions it has. */
export interface DriverFeatures {
  create: boolean
  check: boolean
  setBacking: boolean
  qemuNative: boolean
  upgrade: boolean
}

/** The capability flags of `driver`: each is true exactly when the function behind it exists. */
export function driverFeatures(driver: FormatDriver): DriverFeatures {
  return {
    create: typeof driver.create === 'function',
    check: typeof driver.check === 'function',
    setBacking: typeof driver.setBacking === 'function',
    qemuNative: driver.qemuFormat !== undefined,
    upgrade: driver.upgradesTo !== undefined,
  }
}
