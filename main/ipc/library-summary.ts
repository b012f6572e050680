import { stat } from 'node:fs/promises'
import { baseStateFromInfo } from '../engine/ops/base-state'
import { basename } from 'node:path'
import type { ImageInfo } from '../../shared/image-types'
import type { ImageSummary } from '../../shared/ipc/contract'
import { EngineError } from '../engine/errors'
import { filesIdentity, realPath } from '../engine/fs'
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
  /**
   * Every file the summary depends on: each layer's files, the names they store as resolved
   * (a missing base that appears changes the summary), and the files of the recorded base
   * fingerprint. Null when the image could not be read (then it is read again every time).
   */
  files: string[] | null
}

/** The files a summary read from `layers`, and the ones its recorded fingerprint names. */
function filesRead(layers: readonly ImageInfo[], recorded: BaseFingerprint | null): string[] {
  const files = new Set<string>()
  for (const layer of layers) {
    files.add(layer.filename)
    if (layer['full-data-file'] !== undefined) files.add(layer['full-data-file'])
    if (layer['full-backing-filename'] !== undefined) files.add(layer['full-backing-filename'])
    for (const name of layer.names ?? []) files.add(name.resolved)
  }
  for (const file of recorded?.files ?? []) files.add(file.path)
  return [...files]
}

async function summarize(
  image: LibraryImage,
  policy: NamePolicy,
  recorded: BaseFingerprint | null,
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
    const { status, stored, path, reason } = await baseStateFromInfo(layers, recorded)
    summary.base = { status, stored, path, reason }
    summary.chainLength = layers.length
    const followed = ['ok', 'unverified', 'changed', 'not-read'].includes(status)
    const below = followed ? layers[1] : undefined
    const stopsShort = layers[layers.length - 1]!['backing-filename'] !== undefined
    return {
      summary,
      backingRealPath: below ? await realPath(below.filename) : null,
      stopsShort,
      files: filesRead(layers, recorded),
    }
  } catch (error) {
    summary.error = toIpcError(error, log, `the library summary of ${image.path}`)
    return { summary, backingRealPath: null, stopsShort: true, files: null }
  }
}

/** A summary kept while the files it read are unchanged. */
interface KeptSummary {
  result: Summarized
  /** {@link filesIdentity} of `result.files` when they were read. */
  identity: string
  /** The fingerprint recorded for the image when it was read (its time and hash). */
  fingerprint: string
}

/** What of a recorded fingerprint a summary depends on. */
function fingerprintKey(recorded: BaseFingerprint | null): string {
  return recorded ? `${recorded.base}\0${recorded.recordedAt}\0${recorded.sha256}` : ''
}

/** A summary to hand out: its own object, since dependents and loops are filled in per list. */
function fresh(result: Summarized): Summarized {
  return { ...result, summary: { ...result.summary, dependents: [], loop: null } }
}

/** Options of {@link LibrarySummaries}. */
export interface LibrarySummariesOptions {
  /**
   * A file changed less than this long before its image was read may have changed during the
   * read: such a summary is not kept (default 2 s, as the kept disks of image-readers.ts).
   */
  quietMs?: number
  /** Called each time an image's chain is read (tests count them). */
  onRead?: (path: string) => void
}

/**
 * The library's summaries, kept in main between lists: an image's summary is read again only
 * when one of the files it read changed identity (device, inode, size, modification or change
 * time), its recorded base fingerprint changed, or the library's trusted names changed (they
 * decide what a chain follows). So a Refresh of 1,000 unchanged images stats their files and
 * reads none of them; a list after one overlay was written reads that overlay alone.
 */
export class LibrarySummaries {
  private readonly kept = new Map<string, KeptSummary>()
  /** The trusted pairs the kept summaries were read under. */
  private trustedKey: string | null = null
  private readonly quietMs: number

  constructor(private readonly options: LibrarySummariesOptions = {}) {
    this.quietMs = options.quietMs ?? 2_000
  }

  /**
   * Summarize every image of the library: format, sizes, allocation, the state of its base, and
   * which other library images are overlays on it. Opens chains leniently (as `info` does), so a
   * refused or missing name shows as a status, never as a followed name.
   */
  async list(
    library: Library,
    log: Logger,
  ): Promise<{ images: ImageSummary[]; warning: string | null }> {
    const data = await library.load()
    const warning = library.lastWarning
    library.lastWarning = null
    const policy = await library.policy()
    const trustedKey = data.trusted.map((pair) => `${pair.from}\0${pair.to}`).join('\n')
    if (trustedKey !== this.trustedKey) this.kept.clear()
    this.trustedKey = trustedKey
    const listed = new Set(data.images.map((image) => image.path))
    for (const path of this.kept.keys()) if (!listed.has(path)) this.kept.delete(path)
    const fingerprints = new Map(
      (data.fingerprints ?? [])
        .filter(isBaseFingerprint)
        .map((fingerprint) => [fingerprint.overlay, fingerprint]),
    )
    const realPaths = await Promise.all(data.images.map((image) => realPath(image.path)))
    const results: Summarized[] = new Array<Summarized>(data.images.length)
    let next = 0
    const worker = async (): Promise<void> => {
      for (let index = next++; index < data.images.length; index = next++) {
        const recorded = fingerprints.get(realPaths[index]!) ?? null
        results[index] = await this.summary(data.images[index]!, policy, recorded, log)
      }
    }
    await Promise.all(Array.from({ length: Math.min(PARALLEL, data.images.length) }, worker))
    const overlaysOf = new Map<string, string[]>()
    for (const result of results) {
      if (result.backingRealPath === null) continue
      const overlays = overlaysOf.get(result.backingRealPath) ?? []
      overlays.push(result.summary.path)
      overlaysOf.set(result.backingRealPath, overlays)
    }
    for (const [index, result] of results.entries()) {
      const overlays = overlaysOf.get(realPaths[index]!) ?? []
      result.summary.dependents = overlays.filter((path) => path !== result.summary.path)
    }
    const images = results.map((result) => result.summary)
    // Loops are extra information: a failure to look for them never hides the library. Only a
    // chain that stopped short can hide one, so a library of plain chains reads no header again.
    if (results.some((result) => result.stopsShort)) {
      await markLoops(library, images, realPaths).catch((error: unknown) =>
        log.error('Looking for loops of base names failed', error),
      )
    }
    return { images, warning }
  }

  /** The kept summary of `image` if nothing it read changed, else one read now (and kept). */
  private async summary(
    image: LibraryImage,
    policy: NamePolicy,
    recorded: BaseFingerprint | null,
    log: Logger,
  ): Promise<Summarized> {
    const fingerprint = fingerprintKey(recorded)
    const kept = this.kept.get(image.path)
    if (kept && kept.fingerprint === fingerprint && kept.result.files) {
      const now = await filesIdentity(kept.result.files)
      if (now.text === kept.identity) return fresh(kept.result)
    }
    this.kept.delete(image.path)
    const started = Date.now()
    this.options.onRead?.(image.path)
    const result = await summarize(image, policy, recorded, log)
    if (result.files) {
      const identity = await filesIdentity(result.files)
      if (identity.newest <= started - this.quietMs) {
        this.kept.set(image.path, { result: fresh(result), identity: identity.text, fingerprint })
      }
    }
    return result
  }
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
