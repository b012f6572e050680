import type { ConvertIntoOptions, MeasureInput, MeasureResult } from '../../disk'
import { EngineError } from '../../errors'
import type { BlockFile } from '../../file'
import { replaceFile } from '../../fs'
import { forEachGuestWindow, isAllZero } from '../common/guest-windows'
import { FIELDS, MAX_CLUSTER_BITS, MAX_L1_BYTES, QCOW2_MAGIC, V3_MIN_HEADER_LENGTH } from './header'

/**
 * A new standalone qcow2 file (version 3, 16-bit refcounts, no backing file) with the guest
 * view of a source disk: what `addcow convert -O qcow2` writes.
 *
 * Layout, written in one pass front to back into a temporary file that takes the output's name
 * only when complete (an error or a cancel leaves nothing): cluster 0 the header (104 bytes,
 * then the end-of-extensions marker); the data clusters, in guest order, one for every cluster
 * that holds a non-zero byte (zero clusters stay unallocated, so they read as zeros); the L2
 * tables of the L1 entries that have data; the L1 table; the refcount blocks and the refcount
 * table, sized by the fixed point every refcounted cluster needs (qcow2.txt, "Host cluster
 * management"). Every cluster has refcount 1, so every L1 and L2 entry carries COPIED.
 * `qemu-img check` judges the result.
 */

/** Bit 63 of L1 and L2 entries: the refcount of the cluster is exactly 1. */
const COPIED = 1n << 63n
/** Bytes per L1, L2 and refcount table entry. */
const ENTRY_BYTES = 8
/** 16-bit refcounts (refcount_order 4), QEMU's default. */
const REFCOUNT_ORDER = 4
const REFCOUNT_BYTES = 2

/** The qcow2 layout for a given virtual size and cluster size (for measure, too). */
export interface Qcow2Plan {
  clusterSize: number
  clusterBits: number
  l1Entries: number
  l2Entries: number
}

/** Plan a qcow2 file of `size` bytes with clusters of `clusterSize` (a power of two, 512 B..2 MiB). */
export function planQcow2(size: number, clusterSize: number, path: string): Qcow2Plan {
  const clusterBits = Math.log2(clusterSize)
  if (!Number.isInteger(clusterBits) || clusterBits < 9 || clusterBits > MAX_CLUSTER_BITS) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `The qcow2 cluster size ${clusterSize} is not a power of two between 512 and 2097152.`,
      { path, field: 'cluster_size', value: clusterSize },
    )
  }
  const l2Entries = clusterSize / ENTRY_BYTES
  const clusters = Math.ceil(size / clusterSize)
  const l1Entries = Math.ceil(clusters / l2Entries)
  if (l1Entries * ENTRY_BYTES > MAX_L1_BYTES) {
    throw new EngineError(
      'SIZE_LIMIT',
      `A qcow2 file of ${size} bytes with ${clusterSize}-byte clusters needs an L1 table larger than QEMU's ${MAX_L1_BYTES} bytes; use larger clusters.`,
      { path, field: 'size', value: size },
    )
  }
  return { clusterSize, clusterBits, l1Entries, l2Entries }
}

/**
 * Refcount blocks and table clusters needed so that `clusters` other clusters and the refcount
 * structures themselves are all counted (the fixed point QEMU's qcow2_refcount_metadata_size
 * finds the same way).
 */
export function refcountClusters(
  clusters: number,
  clusterSize: number,
): { blocks: number; table: number } {
  const perBlock = clusterSize / REFCOUNT_BYTES
  const perTableCluster = clusterSize / ENTRY_BYTES
  let blocks = 0
  let table = 0
  for (;;) {
    const nextBlocks = Math.ceil((clusters + blocks + table) / perBlock)
    const nextTable = Math.ceil(nextBlocks / perTableCluster)
    if (nextBlocks === blocks && nextTable === table) return { blocks, table }
    blocks = nextBlocks
    table = nextTable
  }
}

/** Write the guest view of `options.source` as a new qcow2 file at `options.path`. */
export async function writeQcow2Image(options: ConvertIntoOptions): Promise<void> {
  const source = options.source
  const plan = planQcow2(source.size, options.clusterSize ?? 65536, options.path)
  const { clusterSize, l2Entries } = plan
  await replaceFile(
    options.path,
    async (file) => {
      const l2Tables = new Map<number, Buffer>()
      let next = 1 // cluster 0 is the header
      await forEachGuestWindow(
        source,
        { ...options, unit: clusterSize, operation: 'convert' },
        async ({ start, data, knownZero }) => {
          if (!data) return
          const pieces: Buffer[] = []
          const firstHost = next
          for (let index = 0; index * clusterSize < data.length; index++) {
            if (knownZero(index)) continue
            const cluster = data.subarray(index * clusterSize, (index + 1) * clusterSize)
            if (isAllZero(cluster)) continue
            const guestCluster = (start + index * clusterSize) / clusterSize
            const l1Index = Math.floor(guestCluster / l2Entries)
            let table = l2Tables.get(l1Index)
            if (!table) {
              table = Buffer.alloc(clusterSize)
              l2Tables.set(l1Index, table)
            }
            const host = BigInt(next * clusterSize)
            table.writeBigUInt64BE(host | COPIED, (guestCluster % l2Entries) * ENTRY_BYTES)
            pieces.push(cluster)
            next++
          }
          if (pieces.length > 0) {
            await file.writeAt(Buffer.concat(pieces), firstHost * clusterSize)
          }
        },
      )
      const l1 = Buffer.alloc(
        Math.max(1, Math.ceil((plan.l1Entries * ENTRY_BYTES) / clusterSize)) * clusterSize,
      )
      for (const [l1Index, table] of [...l2Tables].sort((a, b) => a[0] - b[0])) {
        await file.writeAt(table, next * clusterSize)
        l1.writeBigUInt64BE(BigInt(next * clusterSize) | COPIED, l1Index * ENTRY_BYTES)
        next++
      }
      const l1Offset = next * clusterSize
      await file.writeAt(l1, l1Offset)
      next += l1.length / clusterSize
      await writeRefcounts(file, next, clusterSize, plan, source.size, l1Offset)
    },
    {
      exclusive: false,
      tag: 'convert',
      doing: 'write',
      operation: 'convert',
      ...(options.signal ? { signal: options.signal } : {}),
    },
  )
}

/** The refcount blocks and table after the `used` clusters, every cluster counted once; then the header. */
async function writeRefcounts(
  file: BlockFile,
  used: number,
  clusterSize: number,
  plan: Qcow2Plan,
  size: number,
  l1Offset: number,
): Promise<void> {
  const { blocks, table } = refcountClusters(used, clusterSize)
  const total = used + blocks + table
  const blockArea = Buffer.alloc(blocks * clusterSize)
  for (let cluster = 0; cluster < total; cluster++) {
    blockArea.writeUInt16BE(1, cluster * REFCOUNT_BYTES)
  }
  const firstBlock = used
  await file.writeAt(blockArea, firstBlock * clusterSize)
  const refcountTable = Buffer.alloc(table * clusterSize)
  for (let block = 0; block < blocks; block++) {
    refcountTable.writeBigUInt64BE(BigInt((firstBlock + block) * clusterSize), block * ENTRY_BYTES)
  }
  const tableOffset = (used + blocks) * clusterSize
  await file.writeAt(refcountTable, tableOffset)
  const header = Buffer.alloc(clusterSize)
  FIELDS.magic.put(header, QCOW2_MAGIC)
  FIELDS.version.put(header, 3)
  FIELDS.clusterBits.put(header, plan.clusterBits)
  FIELDS.size.put(header, BigInt(size))
  FIELDS.l1Size.put(header, plan.l1Entries)
  FIELDS.l1TableOffset.put(header, BigInt(l1Offset))
  FIELDS.refcountTableOffset.put(header, BigInt(tableOffset))
  FIELDS.refcountTableClusters.put(header, table)
  FIELDS.refcountOrder.put(header, REFCOUNT_ORDER)
  FIELDS.headerLength.put(header, V3_MIN_HEADER_LENGTH)
  // The header extensions end at once (type 0, length 0): the rest of the cluster is zero.
  await file.writeAt(header, 0)
  await file.truncate(total * clusterSize)
}

/**
 * The sizes `qemu-img measure -O qcow2` reports, by its rules (block/qcow2.c, qcow2_co_measure
 * and qcow2_calc_prealloc_size): a fully allocated file holds the header cluster, L2 tables for
 * every cluster, the L1 table, the refcount structures and every data cluster; `required`
 * counts only the data clusters the contents use, but keeps all that metadata. Both are upper
 * bounds of what {@link writeQcow2Image} writes.
 */
export async function measureQcow2(input: MeasureInput): Promise<MeasureResult> {
  const clusterSize = input.clusterSize ?? 65536
  planQcow2(input.size, clusterSize, 'the measured image')
  const aligned = Math.ceil(input.size / clusterSize) * clusterSize
  const l2Entries = clusterSize / ENTRY_BYTES
  let meta = clusterSize
  const l2Count = Math.ceil(aligned / clusterSize / l2Entries) * l2Entries
  meta += l2Count * ENTRY_BYTES
  const l1Count = Math.ceil((l2Count * ENTRY_BYTES) / clusterSize / l2Entries) * l2Entries
  meta += l1Count * ENTRY_BYTES
  const { blocks, table } = refcountClusters((meta + aligned) / clusterSize, clusterSize)
  meta += (blocks + table) * clusterSize
  const fullyAllocated = meta + aligned
  const data = await input.dataBytes(clusterSize)
  return { required: fullyAllocated - aligned + data, 'fully-allocated': fullyAllocated }
}
