import { inflateRawSync } from 'node:zlib'
import { decompress as zstdDecompress } from 'fzstd'
import { EngineError } from '../../errors'
import type { CompressionType } from './header'

/** zstd frame magic, little-endian. */
const ZSTD_MAGIC = 0xfd2fb528

function corrupt(path: string, guest: number, reason: string): EngineError {
  return new EngineError(
    'CORRUPT_IMAGE',
    `The compressed cluster at guest offset ${guest} of ${path} cannot be decompressed: ${reason}.`,
    { path, field: 'compressed cluster', offset: guest },
  )
}

/**
 * The length of the zstd frame at the start of `data` (header, blocks, optional checksum), so
 * that bytes after it (the next compressed cluster may share the sector) are not fed to the
 * decoder. Returns -1 when the frame does not fit in `data`.
 */
export function zstdFrameLength(data: Uint8Array): number {
  if (data.length < 6) return -1
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength)
  if (view.getUint32(0, true) !== ZSTD_MAGIC) return -1
  const descriptor = data[4] ?? 0
  const contentSizeFlag = descriptor >> 6
  const singleSegment = (descriptor >> 5) & 1
  const checksum = (descriptor >> 2) & 1
  const dictionaryFlag = descriptor & 3
  let cursor = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][dictionaryFlag]!
  cursor += contentSizeFlag === 0 ? singleSegment : 1 << contentSizeFlag
  for (;;) {
    if (cursor + 3 > data.length) return -1
    const header =
      (data[cursor] ?? 0) | ((data[cursor + 1] ?? 0) << 8) | ((data[cursor + 2] ?? 0) << 16)
    cursor += 3
    const last = header & 1
    const type = (header >> 1) & 3
    const size = header >>> 3
    if (type === 3) return -1
    cursor += type === 1 ? 1 : size
    if (cursor > data.length) return -1
    if (last) break
  }
  cursor += checksum ? 4 : 0
  return cursor > data.length ? -1 : cursor
}

/** The frame content size a zstd frame header declares, or null when it does not declare one. */
function zstdContentSize(data: Uint8Array): number | null {
  const descriptor = data[4] ?? 0
  const contentSizeFlag = descriptor >> 6
  const singleSegment = (descriptor >> 5) & 1
  const bytes = contentSizeFlag === 0 ? singleSegment : 1 << contentSizeFlag
  if (bytes === 0) return null
  const at = 5 + (singleSegment ? 0 : 1) + [0, 1, 2, 4][descriptor & 3]!
  let value = 0
  for (let i = bytes - 1; i >= 0; i--) value = value * 256 + (data[at + i] ?? 0)
  return bytes === 2 ? value + 256 : value
}

/**
 * Decompress one compressed qcow2 cluster into `target` (exactly one cluster long). Deflate
 * streams are raw (no zlib header); zstd data is one frame. Output is bounded by the cluster
 * size; a stream that yields less or more than one cluster is reported as corruption.
 */
export function decompressCluster(
  type: CompressionType,
  input: Uint8Array,
  target: Uint8Array,
  path: string,
  guest: number,
): void {
  if (type === 'deflate') {
    let output: Buffer
    try {
      output = inflateRawSync(input, { maxOutputLength: target.length })
    } catch (error) {
      const code = (error as { code?: string }).code
      throw corrupt(
        path,
        guest,
        code === 'ERR_BUFFER_TOO_LARGE'
          ? `it inflates to more than ${target.length} bytes`
          : `deflate error ${code ?? String(error)}`,
      )
    }
    if (output.length !== target.length) {
      throw corrupt(
        path,
        guest,
        `it inflates to ${output.length} bytes instead of ${target.length}`,
      )
    }
    target.set(output)
    return
  }
  const frameLength = zstdFrameLength(input)
  if (frameLength < 0) throw corrupt(path, guest, 'it does not hold a complete zstd frame')
  const declared = zstdContentSize(input)
  if (declared !== null && declared !== target.length) {
    throw corrupt(
      path,
      guest,
      `its zstd frame declares ${declared} bytes instead of ${target.length}`,
    )
  }
  try {
    target.fill(0)
    zstdDecompress(input.subarray(0, frameLength), target)
  } catch (error) {
    throw corrupt(
      path,
      guest,
      `zstd error ${error instanceof Error ? error.message : String(error)}`,
    )
  }
}
