import { stat } from 'node:fs/promises'
import { baseStateFromInfo } from '../engine/ops/base-state'
import { basename } from 'node:path'
import type { ImageInfo } from '../../shared/image-types'
import type { ImageSummary } from '../../shared/ipc/contract'
import { EngineError } from '../engine/errors'
import { realPath } from '../engine/fs'
import { buildGraph } from '../engine/graph'
import {
  isBaseFingerprint,
  type BaseFingerprint,
  type Library,
  type LibraryImage,
} from '../engine/library'
import type { NamePolicy } from '../engine/names'
import { imageInfo } from '../engine/ops/info'
import { toIpcError } from './errors'
import type { Logger } from './logger'

/** Images summarized at once (each opens its chain's files). */
const PARALLEL = 4

/** The image's own files with their disk usage: for add-cow, the add-cow file and its image file. */
function filesOf(top: ImageInfo): ImageSummary['files'] {
  const dataFile = top['full-data-file']
  const dataUsage = top['data-file-actual-size']
  if (dataFile === undefined || dataUsage === undefined) {
    return [{ role: 'image', path: top.filename, diskUsage: top['actual-size'] }]
  }
  return [
    {
      role: 'metadata',
      path: top.filename,
      diskUsage: Math.max(0, top['actual-size'] - dataUsage),
    },
    { role: 'data', path: dataFile, diskUsage: dataUsage },
  ]
}

function allocatedPercent(top: ImageInfo): number | null {
  if (top['all-allocated']) return 100
  const total = top['total-clusters']
  const allocated = top['allocated-clusters']
  if (total === undefined || allocated === undefined) return null
  return total === 0 ? 100 : Math.min(100, (allocated / total) * 100)
}

interface Summarized {
  summary: ImageSummary
  /** Real path of the backing file this image follows, for the dependents of that file. */
  backingRealPath: string | null
  /**
   * Whether the chain could hide a loop of base names: it stopped at a layer that names a base
   * it did not open (flattened, or refused), or it could not be read at all.
   */
  stopsShort: boolean
}

async function summarize(
  image: LibraryImage,
  policy: NamePolicy,
  fingerprints: ReadonlyMap<string, BaseFingerprint>,
  log: Logger,
): Promise<Summarized> {
  const summary: ImageSummary = {
    path: image.path,
    name: basename(image.path),
    addedAt: image.addedAt,
    format: null,
    virtualSize: null,
    diskUsage: null,
    files: [],
    clusterSize: null,
    allocatedPercent: null,
    base: { status: 'none', stored: null, path: null, reason: null },
    chainLength: 0,
    dependents: [],
    loop: null,
    error: null,
  }
  try {
    const layers = await imageInfo(image.path, { backingChain: true, policy })
    const top = layers[0]
    if (!top)
      throw new EngineError('INTERNAL', `No layers were read from ${image.path}.`, {
        path: image.path,
      })
    summary.format = top.format
    summary.virtualSize = top['virtual-size']
    summary.diskUsage = top['actual-size']
    summary.files = filesOf(top)
    summary.clusterSize = top['cluster-size'] ?? null
    summary.allocatedPercent = allocatedPercent(top)
    const recorded = fingerprints.get(await realPath(image.path)) ?? null
    const { status, stored, path, reason } = await baseStateFromInfo(layers, recorded)
    summary.base = { status, stored, path, reason }
    summary.chainLength = layers.length
    const followed = ['ok', 'unverified', 'changed', 'not-read'].includes(status)
    const below = followed ? layers[1] : undefined
    const stopsShort = layers[layers.length - 1]!['backing-filename'] !== undefined
    return { summary, backingRealPath: below ? await realPath(below.filename) : null, stopsShort }
  } catch (error) {
    summary.error = toIpcError(error, log, `the library summary of ${image.path}`)
    return { summary, backingRealPath: null, stopsShort: true }
  }
}

/**
 * Summarize every image of the library: format, sizes, allocation, the state of its base, and
 * which other library images are overlays on it. Opens chains leniently (as `info` does), so a
 * refused or missing name shows as a status, never as a followed name.
 */
export async function summarizeLibrary(
  library: Library,
  log: Logger,
): Promise<{ images: ImageSummary[]; warning: string | null }> {
  const data = await library.load()
  const warning = library.lastWarning
  library.lastWarning = null
  const policy = await library.policy()
  const fingerprints = new Map(
    (data.fingerprints ?? [])
      .filter(isBaseFingerprint)
      .map((fingerprint) => [fingerprint.overlay, fingerprint]),
  )
  const results: Summarized[] = new Array<Summarized>(data.images.length)
  let next = 0
  const worker = async (): Promise<void> => {
    for (let index = next++; index < data.images.length; index = next++) {
      results[index] = await summarize(data.images[index]!, policy, fingerprints, log)
    }
  }
  await Promise.all(Array.from({ length: Math.min(PARALLEL, data.images.length) }, worker))
  const realPaths = await Promise.all(results.map((result) => realPath(result.summary.path)))
  for (const [index, result] of results.entries()) {
    const real = realPaths[index]
    result.summary.dependents = results
      .filter(
        (other) =>
          other !== result && other.backingRealPath !== null && other.backingRealPath === real,
      )
      .map((other) => other.summary.path)
  }
  // Loops are extra information: a failure to look for them never hides the library. Only a
  // chain that stopped short can hide one, so a library of plain chains reads no header again.
  if (!results.some((result) => result.stopsShort)) {
    return { images: results.map((result) => result.summary), warning }
  }
  await markLoops(
    library,
    results.map((result) => result.summary),
    realPaths,
  ).catch((error: unknown) => log.error('Looking for loops of base names failed', error))
  return { images: results.map((result) => result.summary), warning }
}

/**
 * Set each summary's `loop`: the cycle of stored names it is part of, from the dependency graph
 * (which follows names through flattened layers, where opening a chain stops). Members are named
 * by their library path where they are library images, by real path otherwise.
 */
async function markLoops(
  library: Library,
  summaries: ImageSummary[],
  realPaths: string[],
): Promise<void> {
  const graph = await buildGraph({ library, chainsOnly: true, namesOnly: true })
  if (graph.loops.length === 0) return
  const libraryPath = new Map(realPaths.map((real, index) => [real, summaries[index]!.path]))
  for (const [index, summary] of summaries.entries()) {
    const loop = graph.nodes.get(realPaths[index]!)?.loop
    if (loop) summary.loop = loop.map((member) => libraryPath.get(member) ?? member)
  }
}

/** Check that `path` is a regular file that opens as an image, before it joins the library. */
export async function assertOpensAsImage(path: string, policy: NamePolicy): Promise<void> {
  let info
  try {
    info = await stat(path)
  } catch {
    throw new EngineError('NOT_FOUND', `${path} does not exist.`, { path })
  }
  if (!info.isFile())
    throw new EngineError('BAD_ARGUMENT', `${path} is not a regular file.`, { path })
  await imageInfo(path, { backingChain: false, policy })
}
