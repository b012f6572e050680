import { open, readFile, writeFile } from 'node:fs/promises'
import { expect } from 'vitest'
import { isEngineError, type EngineError } from '../../main/engine/errors'
import {
  encodeHeader,
  FEATURE_ALL_ALLOCATED,
  geometry,
  headerSizeFor,
} from '../../main/engine/formats/add-cow/header'
import type { ErrorCode } from '../../shared/error-codes'

/** Cluster sizes every behaviour suite runs over: the smallest, the default and the largest. */
export const CLUSTER_SIZES = [4096, 65536, 2 * 1024 * 1024] as const

/**
 * A deterministic, never-all-zero byte pattern: `seed` tells patterns apart, and the byte at a
 * given offset differs from its neighbours so misplaced data shows.
 */
export function pattern(length: number, seed: number, start = 0): Buffer {
  const buffer = Buffer.allocUnsafe(length)
  for (let i = 0; i < length; i++) {
    const at = start + i
    buffer[i] = ((seed * 73 + at * 7 + (at >>> 9) * 13) % 255) + 1
  }
  return buffer
}

/** Write a raw file of `size` bytes holding {@link pattern}(size, seed). */
export async function makeRaw(path: string, size: number, seed: number): Promise<Buffer> {
  const data = pattern(size, seed)
  await writeFile(path, data)
  return data
}

/** Make a sparse file of `size` bytes (all zeros). */
export async function makeSparse(path: string, size: number): Promise<void> {
  const handle = await open(path, 'w')
  try {
    await handle.truncate(size)
  } finally {
    await handle.close()
  }
}

/** What {@link writeAddCow} writes, in the terms of the header. */
export interface AddCowFiles {
  /** Path of the add-cow file. */
  path: string
  imageName: string
  backingName?: string | null
  backingFormat?: string | null
  clusterBits?: number
  compatibleFeatures?: bigint
  /** Virtual size; the bitmap is sized for it. The image file itself is not touched. */
  size: number
  /** Bytes of bitmap to store after the header (default: all zero). */
  bitmap?: Uint8Array
}

/**
 * Write an add-cow file directly (header + zeroed bitmap area), bypassing createOverlay: for
 * chains and hostile files that create refuses to make.
 */
export async function writeAddCow(files: AddCowFiles): Promise<Buffer> {
  const clusterBits = files.clusterBits ?? 16
  const shape = geometry(clusterBits, files.size)
  const header = encodeHeader(
    {
      clusterBits,
      incompatibleFeatures: 0n,
      compatibleFeatures:
        files.compatibleFeatures ?? (files.backingName ? 0n : FEATURE_ALL_ALLOCATED),
      headerSize: headerSizeFor(clusterBits),
      backingName: files.backingName ?? null,
      backingFormat: files.backingName ? (files.backingFormat ?? 'raw') : null,
      imageName: files.imageName,
      imageFormat: 'raw',
    },
    files.path,
  )
  const content = Buffer.alloc(shape.fileLength)
  header.copy(content)
  if (files.bitmap) content.set(files.bitmap, header.length)
  await writeFile(files.path, content)
  return content
}

/** Change bytes of a file in place. */
export async function patchFile(path: string, offset: number, bytes: Uint8Array): Promise<void> {
  const handle = await open(path, 'r+')
  try {
    await handle.write(bytes, 0, bytes.length, offset)
  } finally {
    await handle.close()
  }
}

/** Read `length` bytes of a file at `offset` (zeros past its end). */
export async function readFileRange(path: string, offset: number, length: number): Promise<Buffer> {
  const data = await readFile(path)
  const out = Buffer.alloc(length)
  data.copy(out, 0, Math.min(offset, data.length), Math.min(offset + length, data.length))
  return out
}

/** A little-endian u32 as bytes. */
export function u32le(value: number): Buffer {
  const buffer = Buffer.alloc(4)
  buffer.writeUInt32LE(value >>> 0)
  return buffer
}

/** A little-endian u64 as bytes. */
export function u64le(value: bigint): Buffer {
  const buffer = Buffer.alloc(8)
  buffer.writeBigUInt64LE(value)
  return buffer
}

/** Await `promise` and expect it to reject with an EngineError of `code`; returns the error. */
export async function expectEngineError(
  promise: Promise<unknown>,
  code: ErrorCode,
): Promise<EngineError> {
  let caught: unknown = null
  try {
    await promise
  } catch (error) {
    caught = error
  }
  expect(caught, `expected an EngineError ${code}`).not.toBeNull()
  if (!isEngineError(caught))
    throw new Error(`expected an EngineError ${code}, got ${String(caught)}`)
  expect(caught.code, caught.message).toBe(code)
  return caught
}

/** Run `action` and expect it to throw an EngineError of `code` synchronously. */
export function expectEngineErrorSync(action: () => unknown, code: ErrorCode): EngineError {
  let caught: unknown = null
  try {
    action()
  } catch (error) {
    caught = error
  }
  if (!isEngineError(caught))
    throw new Error(`expected an EngineError ${code}, got ${String(caught)}`)
  expect(caught.code, caught.message).toBe(code)
  return caught
}
