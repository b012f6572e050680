/**
 * Domain types that describe images, chains and allocation. Shared by the engine, the CLI's JSON
 * output and the IPC contract, so they hold plain data only (no classes, no Buffers).
 */

/**
 * One run of the guest view with a single source, as `qemu-img map --output=json` reports it.
 *
 * `depth` is 0 for the image itself and n for its n-th backing layer; for a range no layer
 * allocates it is the depth of the deepest layer (the range reads as zeros). `present` says some
 * layer allocates the range, `zero` that it is known to read as zeros, and `data` that it is
 * backed by data somewhere in the chain.
 */
export interface MapExtent {
  start: number
  length: number
  depth: number
  present: boolean
  zero: boolean
  data: boolean
}

/** What the engine knows about one file of a chain member (the add-cow file, its image file). */
export interface FileInfo {
  /** The role of the file in its image. */
  role: 'image' | 'metadata' | 'data'
  filename: string
  /** Bytes actually used on disk (allocated blocks). */
  actualSize: number
  /** Apparent length of the file. */
  length: number
}

/** How a name stored in an image resolves, and whether the policy lets the engine follow it. */
export interface NameResolution {
  /** The name exactly as stored in the image. */
  stored: string
  /** Absolute path it resolves to (relative names resolve against the naming file's folder). */
  resolved: string
  /** Recorded format of the named file, if the image records one. */
  format: string | null
  /** Whether the policy allows following the name, and why. */
  followed: boolean
  reason: NameVerdictReason
}

/** Why a name may or may not be followed (DESIGN.md, "Security rules"). */
export type NameVerdictReason =
  | 'inside-folder'
  | 'trusted-in-library'
  | 'allowed-by-user'
  | 'outside-folder'
  | 'protocol'
  | 'json'
  | 'device'
  | 'not-regular-file'
  | 'missing'
  | 'loop'
  | 'self'
  | 'same-file'

/** `addcow info` for one chain member; key names follow qemu-img's JSON where it has them. */
export interface ImageInfo {
  filename: string
  format: string
  'virtual-size': number
  'actual-size': number
  'cluster-size'?: number
  'backing-filename'?: string
  'full-backing-filename'?: string
  'backing-filename-format'?: string
  /** add-cow only: the data (image) file as stored and as resolved. */
  'data-file'?: string
  'full-data-file'?: string
  'data-file-format'?: string
  'data-file-actual-size'?: number
  /** Clusters (or sectors) allocated in this layer, and their total count. */
  'allocated-clusters'?: number
  'total-clusters'?: number
  'all-allocated'?: boolean
  'format-specific'?: Record<string, unknown>
  /** Every stored name and the verdict of the name policy on it. */
  names?: NameResolution[]
  /** Human-readable warnings (drift, old draft layout, ...). */
  warnings?: string[]
}
