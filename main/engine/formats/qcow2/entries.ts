import { EngineError } from '../../errors'

/**
 * L1 and L2 table entries of qcow2 (docs/interop/qcow2.txt, "Cluster mapping" and "Extended L2
 * Entries"). Entries are big-endian u64s; they are read as two u32 halves so that offsets
 * (bits 9..55, multiples of 512 below 2^56) stay exact JavaScript numbers without bigint.
 */

/** Bit 63 of L1 and L2 entries: refcount is exactly one (write in place). */
export const FLAG_COPIED_HIGH = 0x80000000
/** Bit 62 of L2 entries: compressed cluster. */
export const FLAG_COMPRESSED_HIGH = 0x40000000
/** Bit 0 of standard L2 entries (version 3, no extended L2): the cluster reads as zeros. */
export const FLAG_ZERO_LOW = 0x1
/** Subclusters per cluster with extended L2 entries. */
export const SUBCLUSTERS = 32
/** All 32 subcluster bits. */
export const ALL_SUBCLUSTERS = 0xffffffff

const TWO_32 = 2 ** 32

/** What one guest cluster maps to. */
export type ClusterMapping =
  | { kind: 'unallocated' }
  | { kind: 'zero'; host: number; copied: boolean }
  | { kind: 'data'; host: number; copied: boolean }
  | { kind: 'compressed'; host: number; length: number }
  /** Extended L2, standard cluster: `alloc` and `zero` are the 32-bit subcluster masks. */
  | { kind: 'subclusters'; host: number; copied: boolean; alloc: number; zero: number }

/** The geometry of one image's tables. */
export interface TableGeometry {
  path: string
  clusterBits: number
  clusterSize: number
  extendedL2: boolean
  version: 2 | 3
  /** Bytes per L2 entry: 8, or 16 with extended L2 entries. */
  entryBytes: number
  /** Entries per L2 table. */
  l2Entries: number
}

/** Table geometry for a cluster size and L2 entry kind. */
export function tableGeometry(
  path: string,
  clusterBits: number,
  extendedL2: boolean,
  version: 2 | 3,
): TableGeometry {
  const clusterSize = 2 ** clusterBits
  const entryBytes = extendedL2 ? 16 : 8
  return {
    path,
    clusterBits,
    clusterSize,
    extendedL2,
    version,
    entryBytes,
    l2Entries: clusterSize / entryBytes,
  }
}

function view(buffer: Uint8Array): DataView {
  return new DataView(buffer.buffer, buffer.byteOffset, buffer.byteLength)
}

/** Bits 9..55 of an entry as a number. */
function offsetBits(high: number, low: number): number {
  return (high & 0x00ffffff) * TWO_32 + (low & 0xfffffe00)
}

function corruptEntry(
  geometry: TableGeometry,
  what: string,
  value: number,
  rule: string,
): EngineError {
  return new EngineError(
    'CORRUPT_IMAGE',
    `qcow2 ${what} ${value} in ${geometry.path} is invalid: ${rule}.`,
    {
      path: geometry.path,
      field: what,
      value,
    },
  )
}

/** An L1 entry: the L2 table's offset (0 = none) and its COPIED flag. */
export function readL1Entry(
  table: Uint8Array,
  index: number,
  geometry: TableGeometry,
  fileLength: number,
): { offset: number; copied: boolean } {
  const data = view(table)
  const high = data.getUint32(index * 8, false)
  const low = data.getUint32(index * 8 + 4, false)
  const offset = offsetBits(high, low)
  if (offset % geometry.clusterSize !== 0) {
    throw corruptEntry(
      geometry,
      `L2 table offset (L1 index ${index})`,
      offset,
      `it is not aligned to the cluster size ${geometry.clusterSize}`,
    )
  }
  if (offset !== 0 && offset + geometry.clusterSize > fileLength) {
    throw corruptEntry(
      geometry,
      `L2 table offset (L1 index ${index})`,
      offset,
      `the table runs past the end of the ${fileLength}-byte file`,
    )
  }
  return { offset, copied: (high & FLAG_COPIED_HIGH) !== 0 }
}

/** Write an L1 entry pointing at an L2 table with refcount one. */
export function writeL1Entry(table: Uint8Array, index: number, offset: number): void {
  const data = view(table)
  data.setUint32(index * 8, (FLAG_COPIED_HIGH | Math.floor(offset / TWO_32)) >>> 0, false)
  data.setUint32(index * 8 + 4, offset % TWO_32, false)
}

/**
 * Decode the L2 entry at `index` of `table` into a mapping, checking alignment and bounds.
 * `guestCluster` only names the entry in error messages.
 */
export function readL2Entry(
  table: Uint8Array,
  index: number,
  geometry: TableGeometry,
  fileLength: number,
  guestCluster: number,
): ClusterMapping {
  const data = view(table)
  const at = index * geometry.entryBytes
  const high = data.getUint32(at, false)
  const low = data.getUint32(at + 4, false)
  const guest = guestCluster * geometry.clusterSize
  if (high & FLAG_COMPRESSED_HIGH) {
    // x = 62 - (cluster_bits - 8): offset in bits 0..x-1, extra 512-byte sectors in x..61.
    const x = 70 - geometry.clusterBits
    const highOffsetBits = x - 32
    const highOffset = high & ((1 << highOffsetBits) - 1)
    if (highOffset >= 2 ** 21) {
      throw corruptEntry(
        geometry,
        `compressed cluster offset (guest offset ${guest})`,
        highOffset * TWO_32,
        'it lies beyond 2^53',
      )
    }
    const host = highOffset * TWO_32 + low
    const sectors = ((high & 0x3fffffff) >>> highOffsetBits) + 1
    const length = sectors * 512 - (host % 512)
    if (host === 0 || host >= fileLength) {
      throw corruptEntry(
        geometry,
        `compressed cluster offset (guest offset ${guest})`,
        host,
        `it lies outside the ${fileLength}-byte file`,
      )
    }
    return { kind: 'compressed', host, length }
  }
  const host = offsetBits(high, low)
  const copied = (high & FLAG_COPIED_HIGH) !== 0
  if (host % geometry.clusterSize !== 0) {
    throw corruptEntry(
      geometry,
      `data cluster offset (guest offset ${guest})`,
      host,
      `it is not aligned to the cluster size ${geometry.clusterSize}`,
    )
  }
  if (host !== 0 && host >= fileLength) {
    throw corruptEntry(
      geometry,
      `data cluster offset (guest offset ${guest})`,
      host,
      `it lies past the end of the ${fileLength}-byte file`,
    )
  }
  if (geometry.extendedL2) {
    const zero = data.getUint32(at + 8, false)
    const alloc = data.getUint32(at + 12, false)
    if ((zero & alloc) !== 0) {
      throw corruptEntry(
        geometry,
        `subcluster bitmap (guest offset ${guest})`,
        (zero & alloc) >>> 0,
        'a subcluster is both allocated and zero',
      )
    }
    if (alloc !== 0 && host === 0) {
      throw corruptEntry(
        geometry,
        `subcluster bitmap (guest offset ${guest})`,
        alloc,
        'allocated subclusters need a host cluster',
      )
    }
    if (alloc === 0 && zero === 0) return { kind: 'unallocated' }
    if (zero === ALL_SUBCLUSTERS) return { kind: 'zero', host, copied }
    if (alloc === ALL_SUBCLUSTERS) return { kind: 'data', host, copied }
    return { kind: 'subclusters', host, copied, alloc, zero }
  }
  if (geometry.version === 3 && low & FLAG_ZERO_LOW) return { kind: 'zero', host, copied }
  if (host === 0) return { kind: 'unallocated' }
  return { kind: 'data', host, copied }
}

/** Write an L2 entry. Standard entries take `host` (0 allowed) and flags; extended ones the masks too. */
export function writeL2Entry(
  table: Uint8Array,
  index: number,
  geometry: TableGeometry,
  entry: { host: number; copied: boolean; zero?: boolean; alloc?: number; zeroMask?: number },
): void {
  const data = view(table)
  const at = index * geometry.entryBytes
  const high = (entry.copied ? FLAG_COPIED_HIGH : 0) | Math.floor(entry.host / TWO_32)
  const low = (entry.host % TWO_32) | (!geometry.extendedL2 && entry.zero ? FLAG_ZERO_LOW : 0)
  data.setUint32(at, high >>> 0, false)
  data.setUint32(at + 4, low >>> 0, false)
  if (geometry.extendedL2) {
    data.setUint32(at + 8, (entry.zeroMask ?? 0) >>> 0, false)
    data.setUint32(at + 12, (entry.alloc ?? 0) >>> 0, false)
  }
}
