import type { Disk, OperationOptions } from '../disk'
import { throwIfAborted } from '../errors'

/** Bytes compared per step. */
const STEP = 4 * 1024 * 1024

/** The outcome of comparing two guest views. */
export interface CompareResult {
  identical: boolean
  /** Offset of the first differing byte, when they differ. */
  firstDifference: number | null
  /** Set when the sizes differ (the extra part of the larger one was compared against zeros). */
  sizes: [number, number]
}

function firstMismatch(a: Uint8Array, b: Uint8Array): number {
  const length = Math.min(a.length, b.length)
  if (
    Buffer.from(a.buffer, a.byteOffset, length).equals(Buffer.from(b.buffer, b.byteOffset, length))
  ) {
    return -1
  }
  for (let i = 0; i < length; i++) if (a[i] !== b[i]) return i
  return -1
}

function firstNonZero(data: Uint8Array): number {
  for (let i = 0; i < data.length; i++) if (data[i] !== 0) return i
  return -1
}

async function isZeroRange(disk: Disk, offset: number, length: number): Promise<boolean> {
  if (!disk.capabilities.blockStatus) return false
  return (await disk.blockStatus(offset, length)).every((extent) => extent.zero)
}

/**
 * `compare`: the guest-visible content of two disks, as qemu-img compare does it: when sizes
 * differ, the larger disk's tail must read as zeros for the two to be the same. Ranges both
 * sides report as zero are skipped without reading.
 */
export async function compareDisks(
  a: Disk,
  b: Disk,
  options: OperationOptions = {},
): Promise<CompareResult> {
  const common = Math.min(a.size, b.size)
  const total = Math.max(a.size, b.size)
  const bufferA = Buffer.allocUnsafe(STEP)
  const bufferB = Buffer.allocUnsafe(STEP)
  const result = (firstDifference: number | null): CompareResult => ({
    identical: firstDifference === null,
    firstDifference,
    sizes: [a.size, b.size],
  })
  for (let offset = 0; offset < common; offset += STEP) {
    throwIfAborted(options.signal, 'compare')
    const length = Math.min(STEP, common - offset)
    if ((await isZeroRange(a, offset, length)) && (await isZeroRange(b, offset, length))) continue
    const pieceA = bufferA.subarray(0, length)
    const pieceB = bufferB.subarray(0, length)
    await Promise.all([a.readInto(pieceA, offset), b.readInto(pieceB, offset)])
    const at = firstMismatch(pieceA, pieceB)
    if (at >= 0) return result(offset + at)
    options.onProgress?.(offset + length, total)
  }
  const longer = a.size > b.size ? a : b
  for (let offset = common; offset < total; offset += STEP) {
    throwIfAborted(options.signal, 'compare')
    const length = Math.min(STEP, total - offset)
    if (await isZeroRange(longer, offset, length)) continue
    const piece = bufferA.subarray(0, length)
    await longer.readInto(piece, offset)
    const at = firstNonZero(piece)
    if (at >= 0) return result(offset + at)
    options.onProgress?.(offset + length, total)
  }
  return result(null)
}
