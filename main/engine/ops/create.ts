import { dirname, isAbsolute, relative, resolve } from 'node:path'
import type { OperationOptions } from '../disk'
import { EngineError, isEngineError } from '../errors'
import { pathExists, realPath } from '../fs'
import { createAddCow, planAddCow } from '../formats/add-cow/create'
import type { BaseFingerprint } from '../library'
import { resolveName, type NamePolicy } from '../names'
import { openImage, probeFormat } from '../open'
import { fingerprintBase } from './drift'

export { clusterBitsOf, defaultImageName } from '../formats/add-cow/create'

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

/** Open the base the user named (its format probed unless given), read-only with its chain. */
async function openBase(backingPath: string, options: CreateOverlayOptions) {
  const format = options.backingFormat ?? (await probeFormat(backingPath))
  return openImage(backingPath, {
    format,
    readOnly: true,
    ...(options.policy ? { policy: options.policy } : {}),
  })
}

/**
 * A missing base named by a relative name: say that the name is resolved from the overlay's
 * folder (as it is stored and read later), not from the working directory, and when the
 * working directory has that file, the name that reaches it from the overlay's folder.
 */
async function explainBaseNotFound(
  error: unknown,
  overlay: string,
  name: string,
  backingPath: string,
): Promise<unknown> {
  if (!isEngineError(error, 'NOT_FOUND') || error.path !== backingPath || isAbsolute(name)) {
    return error
  }
  const folder = dirname(overlay)
  if (folder === process.cwd()) return error
  const fromHere = resolve(name)
  const advice = (await pathExists(fromHere))
    ? ` To use ${fromHere}, name it '${relative(folder, fromHere)}' (or give its absolute path).`
    : ''
  return new EngineError(
    'NOT_FOUND',
    `Cannot open the backing file ${backingPath}: no such file. A relative backing name is resolved from the overlay's folder (${folder}), not from the working directory.${advice}`,
    { path: backingPath, field: 'backing', value: name, cause: error },
  )
}

/**
 * `create`: a new add-cow overlay (and its image file when missing), on the base the user named.
 *
 * The base is opened with its chain (through the policy) for its size and its fingerprint, and
 * every pair of files the user named is returned as trusted. The files themselves are written by
 * the add-cow driver's create (main/engine/formats/add-cow/create.ts), so that an error or a
 * cancel leaves nothing behind.
 */
export async function createOverlay(options: CreateOverlayOptions): Promise<CreateOverlayResult> {
  const overlay = resolve(options.overlay)
  if (await pathExists(overlay)) {
    throw new EngineError(
      'ALREADY_EXISTS',
      `${overlay} already exists; refusing to overwrite it.`,
      {
        path: overlay,
      },
    )
  }
  const plan = planAddCow(overlay, {
    ...(options.clusterSize !== undefined ? { clusterSize: options.clusterSize } : {}),
    ...(options.image !== undefined ? { dataFile: options.image } : {}),
  })
  let backing: { name: string; format: string; path: string; size: number } | undefined
  let baseFingerprint: BaseFingerprint | null = null
  if (options.backing !== undefined) {
    if (options.backing === '') {
      throw new EngineError('BAD_ARGUMENT', 'The backing file name must not be empty.', {
        field: 'backing',
      })
    }
    const backingPath = resolveName(overlay, options.backing)
    const base = await openBase(backingPath, options).catch(async (error: unknown) => {
      throw await explainBaseNotFound(error, overlay, options.backing!, backingPath)
    })
    const backingFormat = base.format
    const baseSize = base.size
    try {
      baseFingerprint = await fingerprintBase('', base, options)
    } finally {
      await base.close()
    }
    const realBacking = await realPath(backingPath)
    const realImage = await realPath(plan.imagePath)
    if (realBacking === realImage) {
      throw new EngineError(
        'SAME_FILE',
        `The image file and the backing file are the same file (${realImage}).`,
        { path: overlay, field: 'image', value: plan.imageName },
      )
    }
    if (realBacking === overlay) {
      throw new EngineError('SAME_FILE', `The overlay ${overlay} cannot be its own backing file.`, {
        path: overlay,
      })
    }
    backing = { name: options.backing, format: backingFormat, path: backingPath, size: baseSize }
  } else if (options.backingFormat !== undefined) {
    throw new EngineError('BAD_ARGUMENT', 'A backing format (-F) needs a backing file (-b).', {
      field: 'backing format',
    })
  }

  const created = await createAddCow({
    path: overlay,
    dataFile: plan.imageName,
    ...(options.size !== undefined ? { size: options.size } : {}),
    ...(options.clusterSize !== undefined ? { clusterSize: options.clusterSize } : {}),
    ...(backing ? { backing } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.onProgress ? { onProgress: options.onProgress } : {}),
  })
  const from = await realPath(overlay)
  const trust = [{ from, to: await realPath(plan.imagePath) }]
  if (backing) trust.push({ from, to: await realPath(backing.path) })
  return {
    overlay,
    image: plan.imagePath,
    imageCreated: created.created.includes(plan.imagePath),
    backing: backing?.path ?? null,
    backingFormat: backing?.format ?? null,
    size: created.size,
    clusterSize: created.clusterSize ?? 2 ** plan.clusterBits,
    trust,
    baseFingerprint: baseFingerprint && { ...baseFingerprint, overlay: from },
  }
}
