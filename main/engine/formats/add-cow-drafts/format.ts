import type { FormatDescription } from '../../disk'
import { bytes, u32, u64 } from '../../struct'
import { hasAddCowMagic } from '../add-cow/format'

/*
 * What the driver table knows of the earlier add-cow drafts before loading their driver: the
 * header fields a probe reads, the probes, and one description per layout. layouts.ts parses
 * the rest of each header.
 */

/** The 8-byte magic of V12, v3 and v7: "ADD_COW" and 0xff. */
export const DRAFT_MAGIC = Buffer.from([0x41, 0x44, 0x44, 0x5f, 0x43, 0x4f, 0x57, 0xff])

/** V12 header, little-endian. */
export const V12_FIELDS = {
  magic: bytes('magic', 0, 8),
  version: u32('version', 8, true),
  backingNameOffset: u32('backing name offset', 12, true),
  backingNameLength: u32('backing name length', 16, true),
  imageNameOffset: u32('image name offset', 20, true),
  imageNameLength: u32('image name length', 24, true),
  /** Bit 0: every cluster is allocated; other bits unknown (refused). */
  features: u64('features', 28, true),
  /** Ignored when unknown. */
  optionalFeatures: u64('optional features', 36, true),
  /** Header size = 4096 * pages; the bitmap starts there. */
  headerPages: u32('header pages', 44, true),
  backingFormat: bytes('backing format', 48, 16),
  imageFormat: bytes('image format', 64, 16),
} as const
export const V12_FIXED_SIZE = 80
export const V12_CLUSTER_SIZE = 65536
/** Largest V12 header accepted (512 pages, 2 MiB). */
export const V12_MAX_HEADER_PAGES = 512

/** v3 and v7 headers, big-endian. */
export const V3_FIELDS = {
  magic: bytes('magic', 0, 8),
  version: u32('version', 8, false),
  /** NUL-padded. */
  backingFile: bytes('backing file', 12, 1024),
  /** NUL-padded. */
  imageFile: bytes('image file', 1036, 1024),
  /** v3 only: the virtual size. */
  size: u64('size', 2060, false),
} as const
/** v7: 2060..2559 reserved (zero). */
export const V7_RESERVED = bytes('reserved', 2060, 500)
export const V3_BITMAP_OFFSET = 2068
export const V7_BITMAP_OFFSET = 2560
export const SECTOR_SIZE = 512

/** The draft layouts, as driver names. */
export type DraftLayout = 'add-cow-v18' | 'add-cow-v12' | 'add-cow-v7' | 'add-cow-v3'

function hasDraftMagic(head: Uint8Array): boolean {
  return head.length >= 12 && DRAFT_MAGIC.every((byte, index) => head[index] === byte)
}

/** Whether `head` is an add-cow file that only the V18 rules accept (small clusters, full format fields). */
export function looksLikeV18(head: Uint8Array): boolean {
  if (head.length < 76) return false
  const data = new DataView(head.buffer, head.byteOffset, head.byteLength)
  if (!hasAddCowMagic(head)) return false
  const clusterBits = data.getUint32(20, true)
  const fills = (from: number): boolean => head.subarray(from, from + 16).indexOf(0) === -1
  return (clusterBits >= 9 && clusterBits <= 11) || fills(44) || fills(60)
}

/** Whether `head` starts a V12 file (draft magic, little-endian version 1). */
export function looksLikeV12(head: Uint8Array): boolean {
  return hasDraftMagic(head) && V12_FIELDS.version.get(head) === 1
}

function isBigEndianDraft(head: Uint8Array): boolean {
  return hasDraftMagic(head) && V3_FIELDS.version.get(head) === 1
}

/** The add-cow file length a v3 header prescribes: header, then one bit per 512-byte sector. */
export function v3FileLength(size: number): number {
  return V3_BITMAP_OFFSET + Math.ceil(Math.ceil(size / SECTOR_SIZE) / 8)
}

/** Whether `head` (of a `fileLength`-byte file) is a v3 file: its length matches its stored size. */
export function looksLikeV3(head: Uint8Array, fileLength: number): boolean {
  if (!isBigEndianDraft(head) || head.length < V3_BITMAP_OFFSET) return false
  const size = V3_FIELDS.size.get(head)
  return size <= BigInt(Number.MAX_SAFE_INTEGER) && v3FileLength(Number(size)) === fileLength
}

/** Whether `head` (of a `fileLength`-byte file) is a v7 file: the reserved area is zero. */
export function looksLikeV7(head: Uint8Array, fileLength: number): boolean {
  return (
    isBigEndianDraft(head) &&
    fileLength >= V7_BITMAP_OFFSET &&
    head.length >= V7_BITMAP_OFFSET &&
    V7_RESERVED.get(head).every((byte) => byte === 0)
  )
}

/** Whether `head` has the big-endian draft magic at all (a damaged v3 or v7 file). */
export function looksLikeBigEndianDraft(head: Uint8Array): boolean {
  return isBigEndianDraft(head)
}

/** A draft layout's description: read and upgraded to the current layout, never created. */
function draftFormat(
  name: DraftLayout,
  probe: (head: Uint8Array, fileLength: number) => number,
): FormatDescription & { name: DraftLayout } {
  return { name, probe, upgradesTo: 'add-cow' }
}

/**
 * add-cow V18 (2013): the current layout with 512 B..2 KiB clusters or unterminated format
 * fields. Other "ACOW" files probe weakly (the current driver claims them with 100), so that
 * `-f add-cow-v18` still opens them and names what is wrong.
 */
export const ADD_COW_V18_FORMAT = draftFormat('add-cow-v18', (head) =>
  looksLikeV18(head) ? 100 : hasAddCowMagic(head) ? 1 : 0,
)
/** add-cow V12 (2012): "ADD_COW\xff", little-endian. */
export const ADD_COW_V12_FORMAT = draftFormat('add-cow-v12', (head) =>
  looksLikeV12(head) ? 100 : 0,
)
/** add-cow v7 (2012): "ADD_COW\xff", big-endian, bitmap at 2560 (weakly any big-endian draft). */
export const ADD_COW_V7_FORMAT = draftFormat('add-cow-v7', (head, length) =>
  looksLikeV7(head, length) ? 100 : looksLikeBigEndianDraft(head) ? 1 : 0,
)
/**
 * add-cow v3 (2011): "ADD_COW\xff", big-endian, size at 2060, bitmap at 2068. A big-endian draft
 * whose length fits neither v3 nor v7 still probes (weakly) as v3, so the open names the fault.
 */
export const ADD_COW_V3_FORMAT = draftFormat('add-cow-v3', (head, length) =>
  looksLikeV3(head, length)
    ? 100
    : looksLikeBigEndianDraft(head) && !looksLikeV7(head, length)
      ? 10
      : 0,
)
