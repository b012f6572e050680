import { rm } from 'node:fs/promises'
import { basename, resolve } from 'node:path'
import type { OperationOptions } from '../disk'
import { EngineError, throwIfAborted } from '../errors'
import { BlockFile } from '../file'
import { isRegularFile, pathExists, realPath, replaceFile } from '../fs'
import { MAX_BITMAP_BYTES } from '../formats/add-cow/add-cow-disk'
import {
  DEFAULT_CLUSTER_BITS,
  encodeHeader,
  FEATURE_ALL_ALLOCATED,
  geometry,
  MAX_CLUSTER_BITS,
  MIN_CLUSTER_BITS,
} from '../formats/add-cow/header'
import { resolveName } from '../names'
import { openImage, probeFormat } from '../open'
import type { NamePolicy } from '../names'
import type { BaseFingerprint } from '../library'
import { fingerprintBase } from './drift'

/** What `addcow create` needs. Names are stored exactly as given. */
export interface CreateOverlayOptions extends OperationOptions {
  /** Path of the new add-cow file. */
  overlay: string
  /** Backing file name as it will be stored (relative names are relative to the overlay's folder). */
  backing?: string
  /** Backing format; probed from the base when absent (the user named the base explicitly). */
  backingFormat?: string
  /** Image file name as it will be stored; default: the overlay's name with .add-cow → .raw. */
  image?: string
  /** Virtual size; default: the base's size (or the existing image file's, if larger). */
  size?: number
  /** Cluster size in bytes, a power of two in 4 KiB..2 MiB; default 64 KiB. */
  clusterSize?: number
  /** Policy for the base's own chain (the base itself was named by the user). */
  policy?: NamePolicy
}

/** What was created, for the caller to report and to record in the library. */
export interface CreateOverlayResult {
  overlay: string
  image: string
  imageCreated: boolean
  backing: string | null
  backingFormat: string | null
  size: number
  clusterSize: number
  /** Pairs (real paths) the library should trust: the user named these files. */
  trust: { from: string; to: string }[]
  /** The base's fingerprint at creation, for the library (the drift guard, ops/drift.ts). */
  baseFingerprint: BaseFingerprint | null
}

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

/**
 * Create an add-cow overlay (and its image file when missing).
 *
 * The add-cow file is written under a temporary name and renamed into place last, and an image
 * file this call created is removed on failure, so an error or a cancel leaves nothing behind.
 * An existing image file is kept, grown sparsely to the size if shorter, and never shrunk.
 */
export async function createOverlay(options: CreateOverlayOptions): Promise<CreateOverlayResult> {
  const overlay = resolve(options.overlay)
  const clusterBits =
    options.clusterSize === undefined ? DEFAULT_CLUSTER_BITS : clusterBitsOf(options.clusterSize)
  const clusterSize = 2 ** clusterBits
  if (await pathExists(overlay)) {
    throw new EngineError(
      'ALREADY_EXISTS',
      `${overlay} already exists; refusing to overwrite it.`,
      {
        path: overlay,
      },
    )
  }
  const imageName = options.image ?? defaultImageName(overlay)
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

  let backingPath: string | null = null
  let backingFormat: string | null = null
  let baseSize = 0
  let baseFingerprint: BaseFingerprint | null = null
  if (options.backing !== undefined) {
    if (options.backing === '') {
      throw new EngineError('BAD_ARGUMENT', 'The backing file name must not be empty.', {
        field: 'backing',
      })
    }
    backingPath = resolveName(overlay, options.backing)
    backingFormat = options.backingFormat ?? (await probeFormat(backingPath))
    const base = await openImage(backingPath, {
      format: backingFormat,
      readOnly: true,
      ...(options.policy ? { policy: options.policy } : {}),
    })
    baseSize = base.size
    try {
      baseFingerprint = await fingerprintBase('', base, options)
    } finally {
      await base.close()
    }
    const realBacking = await realPath(backingPath)
    const realImage = await realPath(imagePath)
    if (realBacking === realImage) {
      throw new EngineError(
        'SAME_FILE',
        `The image file and the backing file are the same file (${realImage}).`,
        { path: overlay, field: 'image', value: imageName },
      )
    }
    if (realBacking === overlay) {
      throw new EngineError('SAME_FILE', `The overlay ${overlay} cannot be its own backing file.`, {
        path: overlay,
      })
    }
  } else if (options.backingFormat !== undefined) {
    throw new EngineError('BAD_ARGUMENT', 'A backing format (-F) needs a backing file (-b).', {
      field: 'backing format',
    })
  }

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
  } else if (backingPath !== null) {
    size = Math.max(baseSize, existingLength)
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
  const header = encodeHeader(
    {
      clusterBits,
      incompatibleFeatures: 0n,
      compatibleFeatures: backingPath === null ? FEATURE_ALL_ALLOCATED : 0n,
      headerSize: 0,
      backingName: options.backing ?? null,
      backingFormat,
      imageName,
      imageFormat: 'raw',
    },
    overlay,
  )
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
        await meta.truncate(shape.fileLength)
        await meta.writeAt(header, 0)
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

  const trust = [{ from: await realPath(overlay), to: await realPath(imagePath) }]
  if (backingPath !== null) trust.push({ from: trust[0]!.from, to: await realPath(backingPath) })
  return {
    overlay,
    image: imagePath,
    imageCreated,
    backing: backingPath,
    backingFormat,
    size,
    clusterSize,
    trust,
    baseFingerprint: baseFingerprint && { ...baseFingerprint, overlay: trust[0]!.from },
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
