import type { BackingLink } from '../../disk'
import { EngineError, throwIfAborted } from '../../errors'
import { BlockFile } from '../../file'
import { realPath, replaceFile } from '../../fs'
import {
  encodeHeader,
  FIELDS,
  geometry,
  MAX_CLUSTER_BITS,
  parseHeader,
  type AddCowHeader,
} from './header'

/**
 * Direct edits of an add-cow file, behind the driver's abilities (ALL_ALLOCATED hand-over,
 * a new backing link, restored features, check's repairs). Each edit
 * is one write followed by a sync, so a crash leaves either the old or the new value.
 */

/** Read and validate the header of the add-cow file at `path` (nothing else is opened). */
export async function readHeaderFile(path: string): Promise<AddCowHeader> {
  const file = await BlockFile.open(path, false)
  try {
    const head = Buffer.alloc(Math.min(await file.length(), 2 ** MAX_CLUSTER_BITS))
    await file.readAt(head, 0)
    return parseHeader(head, path).header
  } finally {
    await file.close()
  }
}

/** Write the compatible-features field (bytes 32-39) and make it durable. */
export async function writeCompatibleFeatures(meta: BlockFile, features: bigint): Promise<void> {
  const field = Buffer.alloc(8)
  field.writeBigUInt64LE(features)
  await meta.writeAt(field, FIELDS.compatibleFeatures.offset)
  await meta.datasync()
}

/**
 * Set every bit of the bitmap of a `virtualSize`-byte image (bits past the last cluster stay
 * 0), then sync. Used before clearing ALL_ALLOCATED so that the guest view never changes.
 */
export async function fillBitmap(
  meta: BlockFile,
  header: Pick<AddCowHeader, 'clusterBits' | 'headerSize'>,
  virtualSize: number,
): Promise<void> {
  const shape = geometry(header.clusterBits, virtualSize)
  const chunk = Buffer.alloc(Math.min(shape.bitmapBytes, 1024 * 1024), 0xff)
  for (let done = 0; done < shape.bitmapBytes; done += chunk.length) {
    const piece = chunk.subarray(0, Math.min(chunk.length, shape.bitmapBytes - done))
    const isLast = done + piece.length === shape.bitmapBytes
    const tail = shape.clusters % 8
    if (isLast && tail !== 0) {
      const copy = Buffer.from(piece)
      copy[copy.length - 1] = (1 << tail) - 1
      await meta.writeAt(copy, header.headerSize + done)
    } else {
      await meta.writeAt(piece, header.headerSize + done)
    }
  }
  await meta.datasync()
}

/**
 * Replace the header of the add-cow file at `path` atomically: write a copy with `header`
 * (encoded byte-exact: backing name at 76, image name right after it, zeros to header_size)
 * and the old bitmap area, sync it, and rename it over the original. The caller holds the
 * file's exclusive lock and has closed every handle on it.
 */
export async function rewriteHeader(
  path: string,
  header: AddCowHeader,
  signal?: AbortSignal,
): Promise<void> {
  const target = await realPath(path)
  const encoded = encodeHeader(header, target)
  if (encoded.length !== header.headerSize) {
    throw new EngineError(
      'INTERNAL',
      `The new header of ${target} is ${encoded.length} bytes, not ${header.headerSize}.`,
      { path: target },
    )
  }
  const source = await BlockFile.open(target, false)
  try {
    const length = await source.length()
    await replaceFile(
      target,
      async (copy) => {
        await copy.truncate(Math.max(length, encoded.length))
        await copy.writeAt(encoded, 0)
        const buffer = Buffer.allocUnsafe(4 * 1024 * 1024)
        for (let position = encoded.length; position < length; position += buffer.length) {
          throwIfAborted(signal, 'header rewrite')
          const piece = buffer.subarray(0, Math.min(buffer.length, length - position))
          await source.readAt(piece, position)
          if (piece.some((byte) => byte !== 0)) await copy.writeAt(piece, position)
        }
      },
      { tag: 'rebase', signal, operation: 'header rewrite', doing: 'rewrite the header of' },
    )
  } finally {
    await source.close()
  }
}

/** Store a new backing link in the add-cow file at `path` ({@link rewriteHeader}). */
export async function setBackingLink(
  path: string,
  backing: BackingLink | null,
  signal?: AbortSignal,
): Promise<void> {
  const header = await readHeaderFile(path)
  await rewriteHeader(
    path,
    { ...header, backingName: backing?.name ?? null, backingFormat: backing?.format ?? null },
    signal,
  )
}

/** Put back the compatible features a rollback saved (the disk's savedState) in `path`. */
export async function restoreFeatures(path: string, state: string): Promise<void> {
  const meta = await BlockFile.open(path, true)
  try {
    await writeCompatibleFeatures(meta, BigInt(state))
  } finally {
    await meta.close()
  }
}
