import { rm } from 'node:fs/promises'
import { basename, resolve } from 'node:path'
import type { BackingLink, CreatedImage, CreateImageOptions } from '../../disk'
import { EngineError, throwIfAborted } from '../../errors'
import { BlockFile } from '../../file'
import { isRegularFile, pathExists, replaceFile } from '../../fs'
import { resolveName } from '../../names'
import {
  DEFAULT_CLUSTER_BITS,
  encodeHeader,
  FEATURE_ALL_ALLOCATED,
  geometry,
  MAX_BITMAP_BYTES,
  MAX_CLUSTER_BITS,
  MIN_CLUSTER_BITS,
} from './header'

/** The default image file name for an overlay: `x.add-cow` → `x.raw`, else `x.raw` appended. */
export function defaultImageName(overlay: string): string {
  const name = basename(overlay)
  return name.endsWith('.add-cow') ? name.slice(0, -'.add-cow'.length) + '.raw' : name + '.raw'
}

/** Cluster bits for a cluster size, or a BAD_ARGUMENT error. */
export function clusterBitsOf(clusterSize: number): number {
  const bits = Math.log2(clusterSize)
  if (!Number.isInteger(bits) || bits < MIN_CLUSTER_BITS || bits > MAX_CLUSTER_BITS) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `Cluster size ${clusterSize} is not a power of two between 4 KiB and 2 MiB.`,
      { field: 'cluster size', value: clusterSize },
    )
  }
  return bits
}

/** Where the new overlay's image file goes, and its cluster bits (checked before any file is read). */
export interface AddCowPlan {
  clusterBits: number
  imageName: string
  imagePath: string
}

/** Check the cluster size and the image name of a new add-cow file at `overlay` (absolute). */
export function planAddCow(
  overlay: string,
  options: { clusterSize?: number; dataFile?: string },
): AddCowPlan {
  const clusterBits =
    options.clusterSize === undefined ? DEFAULT_CLUSTER_BITS : clusterBitsOf(options.clusterSize)
  const imageName = options.dataFile ?? defaultImageName(overlay)
  if (imageName === '') {
    throw new EngineError('BAD_ARGUMENT', 'The image file name must not be empty.', {
      field: 'image',
    })
  }
  const imagePath = resolveName(overlay, imageName)
  if (imagePath === overlay) {
    throw new EngineError(
      'SAME_FILE',
      `The image file ${imagePath} cannot be the overlay itself.`,
      {
        path: overlay,
        field: 'image',
      },
    )
  }
  return { clusterBits, imageName, imagePath }
}

/**
 * The add-cow driver's create: a new add-cow file (and its image file when missing).
 *
 * The add-cow file is written under a temporary name and linked into place last, and an image
 * file this call created is removed on failure, so an error or a cancel leaves nothing behind.
 * An existing image file is kept, grown sparsely to the size if shorter, and never shrunk.
 * Without a backing file the overlay is created with ALL_ALLOCATED set.
 */
export async function createAddCow(options: CreateImageOptions): Promise<CreatedImage> {
  const overlay = resolve(options.path)
  const { clusterBits, imageName, imagePath } = planAddCow(overlay, options)
  const clusterSize = 2 ** clusterBits
  const imageExists = await pathExists(imagePath)
  if (imageExists && !(await isRegularFile(imagePath))) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `The image file ${imagePath} exists and is not a regular file.`,
      {
        path: imagePath,
        field: 'image',
        value: imageName,
      },
    )
  }
  const existingLength = imageExists ? await fileLength(imagePath) : 0
  let size: number
  if (options.size !== undefined) {
    size = options.size
    if (imageExists && size < existingLength) {
      throw new EngineError(
        'WOULD_SHRINK',
        `The image file ${imagePath} is ${existingLength} bytes; refusing to shrink it to ${size}.`,
        { path: imagePath, field: 'size', value: size },
      )
    }
  } else if (options.backing) {
    size = Math.max(options.backing.size, existingLength)
  } else if (imageExists) {
    size = existingLength
  } else {
    throw new EngineError(
      'BAD_ARGUMENT',
      `A size (-s) is needed for ${overlay}: there is no base to take it from.`,
      {
        path: overlay,
        field: 'size',
      },
    )
  }
  if (Number.isInteger(size) && size > Number.MAX_SAFE_INTEGER) {
    throw new EngineError(
      'SIZE_LIMIT',
      `Size ${size} is more than this tool can address (2^53 - 1 bytes).`,
      {
        field: 'size',
        value: size,
      },
    )
  }
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new EngineError('BAD_ARGUMENT', `Size ${size} is not a valid byte count.`, {
      field: 'size',
      value: size,
    })
  }
  const shape = geometry(clusterBits, size)
  if (shape.bitmapBytes > MAX_BITMAP_BYTES) {
    throw new EngineError(
      'SIZE_LIMIT',
      `Size ${size} needs a ${shape.bitmapBytes}-byte bitmap at ${clusterSize}-byte clusters; the limit is ${MAX_BITMAP_BYTES} (use larger clusters or a smaller size).`,
      { field: 'size', value: size },
    )
  }
  const content = encodeAddCowFile(overlay, {
    clusterBits,
    size,
    backing: options.backing
      ? { name: options.backing.name, format: options.backing.format ?? 'raw' }
      : null,
    imageName,
    allAllocated: !options.backing,
  })
  throwIfAborted(options.signal, 'create')

  let imageCreated = false
  try {
    const image = imageExists
      ? await BlockFile.open(imagePath, true)
      : await BlockFile.create(imagePath, true)
    imageCreated = !imageExists
    try {
      if (size > existingLength) await image.truncate(size)
      await image.sync()
    } finally {
      await image.close()
    }
    options.onProgress?.(1, 3)
    throwIfAborted(options.signal, 'create')
    await replaceFile(
      overlay,
      async (meta) => {
        await writeAddCowFile(meta, content)
        options.onProgress?.(2, 3)
      },
      {
        exclusive: true,
        tag: 'creating',
        signal: options.signal,
        operation: 'create',
        doing: 'create',
      },
    )
    options.onProgress?.(3, 3)
  } catch (error) {
    if (imageCreated) await rm(imagePath, { force: true })
    throw error
  }

  return {
    path: overlay,
    size,
    files: [overlay, imagePath],
    created: imageCreated ? [imagePath, overlay] : [overlay],
    clusterSize,
  }
}

async function fileLength(path: string): Promise<number> {
  const file = await BlockFile.open(path, false)
  try {
    return await file.length()
  } finally {
    await file.close()
  }
}

/** What a new add-cow file holds, in the terms of the layout. */
export interface AddCowContent {
  clusterBits: number
  /** The virtual size (the image file's length), which sizes the bitmap. */
  size: number
  backing: BackingLink | null
  imageName: string
  /** Set ALL_ALLOCATED: every cluster is in the image file, the backing file is never read. */
  allAllocated: boolean
}

/** An add-cow file encoded, ready to write: its header and its length (FORMATS.md §1). */
export interface EncodedAddCow {
  header: Buffer
  fileLength: number
  bitmapBytes: number
}

/**
 * Encode a new add-cow file: the header (names checked, byte-exact: backing name at 76, image
 * name right after it) and the length its bitmap needs. Throws before any file is touched.
 */
export function encodeAddCowFile(path: string, content: AddCowContent): EncodedAddCow {
  const shape = geometry(content.clusterBits, content.size)
  const header = encodeHeader(
    {
      clusterBits: content.clusterBits,
      incompatibleFeatures: 0n,
      compatibleFeatures: content.allAllocated ? FEATURE_ALL_ALLOCATED : 0n,
      headerSize: 0,
      backingName: content.backing?.name ?? null,
      backingFormat: content.backing ? content.backing.format : null,
      imageName: content.imageName,
      imageFormat: 'raw',
    },
    path,
  )
  return { header, fileLength: shape.fileLength, bitmapBytes: shape.bitmapBytes }
}

/** Write an encoded add-cow file into an empty `file`: its length, header and bitmap bits. */
export async function writeAddCowFile(
  file: BlockFile,
  encoded: EncodedAddCow,
  bitmap?: Uint8Array,
): Promise<void> {
  await file.truncate(encoded.fileLength)
  await file.writeAt(encoded.header, 0)
  if (bitmap) await file.writeAt(bitmap.subarray(0, encoded.bitmapBytes), encoded.header.length)
}
