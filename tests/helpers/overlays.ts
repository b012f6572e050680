import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { AddCowDisk } from '../../main/engine/formats/add-cow/add-cow-disk'
import { Library } from '../../main/engine/library'
import { createOverlay, type CreateOverlayOptions } from '../../main/engine/ops/create'
import { openImage } from '../../main/engine/open'

/** A deterministic, non-zero pattern: byte i of `seed`'s stream. */
export function pattern(length: number, seed: number): Buffer {
  const buffer = Buffer.alloc(length)
  let state = (seed * 2654435761) >>> 0 || 1
  for (let i = 0; i < length; i++) {
    state ^= state << 13
    state ^= state >>> 17
    state ^= state << 5
    buffer[i] = (state >>> 0) & 0xff || 1
  }
  return buffer
}

/** A raw file of `size` bytes holding `chunks` ([offset, data]) and holes elsewhere. */
export async function makeRaw(
  path: string,
  size: number,
  chunks: [number, Buffer][] = [],
): Promise<void> {
  await writeFile(path, Buffer.alloc(0))
  const { open } = await import('node:fs/promises')
  const handle = await open(path, 'r+')
  await handle.truncate(size)
  for (const [offset, data] of chunks) await handle.write(data, 0, data.length, offset)
  await handle.close()
}

/** Create an overlay (recording trust and the base fingerprint in `library`, as the CLI does). */
export async function makeOverlay(
  library: Library,
  options: CreateOverlayOptions,
): Promise<string> {
  const result = await createOverlay(options)
  await library.trust(result.trust, 'created')
  await library.addImages([result.overlay])
  if (result.baseFingerprint) await library.recordBaseFingerprint(result.baseFingerprint)
  return result.overlay
}

/** Write guest data through the engine. */
export async function writeGuest(path: string, writes: [number, Buffer][]): Promise<void> {
  const disk = await openImage(path, { readOnly: false })
  try {
    for (const [offset, data] of writes) await disk.write(offset, data)
  } finally {
    await disk.close()
  }
}

/** The whole guest view of an image. */
export async function guestView(path: string): Promise<Buffer> {
  const disk = await openImage(path, { readOnly: true })
  try {
    return await disk.read(0, disk.size)
  } finally {
    await disk.close()
  }
}

/** Allocation bits of an add-cow overlay, and whether ALL_ALLOCATED is set. */
export async function allocation(
  path: string,
): Promise<{ bits: boolean[]; allAllocated: boolean }> {
  const disk = await openImage(path, { readOnly: true })
  try {
    if (!(disk instanceof AddCowDisk)) throw new Error(`${path} is not add-cow`)
    const bits: boolean[] = []
    for (let cluster = 0; cluster < disk.geometry.clusters; cluster++)
      bits.push(disk.isAllocated(cluster))
    return { bits, allAllocated: disk.allAllocated }
  } finally {
    await disk.close()
  }
}

/** A library in its own folder. */
export function libraryIn(folder: string): Library {
  return new Library(join(folder, 'library.json'))
}

export async function bytesOf(path: string): Promise<Buffer> {
  return readFile(path)
}
