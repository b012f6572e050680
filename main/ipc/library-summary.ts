import { stat } from 'node:fs/promises'
import { baseStateFromInfo } from '../engine/ops/base-state'
import { basename } from 'node:path'
import type { ImageInfo } from '../../shared/image-types'
import type { ImageSummary } from '../../shared/ipc/contract'
import { EngineError } from '../engine/errors'
import { fileIdentity, filesIdentity, realPath, type FileIdentity } from '../engine/fs'
import { buildGraph } from '../engine/graph'
import {
  isBaseFingerprint,
  Library,
  type BaseFingerprint,
  type LibraryImage,
} from '../engine/library'
import type { NamePolicy } from '../engine/names'
import { imageInfo } from '../engine/ops/info'
import { toIpcError } from './errors'
import type { Logger } from './logger'

/** Images summarized at once (each opens its chain's files). */
const PARALLEL = 4
/** From this many images to read in one list, the list may answer before they are all read. */
const STREAM_FROM = 50

/** Kept summaries checked at once (each only stats its files). */
const PARALLEL_CHECKS = 64

/** `work` asked once per argument: later calls with the same one share the first's promise. */
function memoized<Value>(work: (key: string) => Promise<Value>): (key: string) => Promise<Value> {
  const asked = new Map<string, Promise<Value>>()
  return (key) => {
    let answer = asked.get(key)
    if (!answer) asked.set(key, (answer = work(key)))
    return answer
  }
}

/** Run `work(index)` for every index below `count`, `parallel` at a time. */
async function inPool(
  count: number,
  parallel: number,
  work: (index: number) => Promise<void>,
): Promise<void> {
  let next = 0
  const worker = async (): Promise<void> => {
    for (let index = next++; index < count; index = next++) await work(index)
  }
  await Promise.all(Array.from({ length: Math.min(parallel, count) }, worker))
}

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

/** What is known of `image` before it is read. */
function emptySummary(image: LibraryImage): ImageSummary {
  return {
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
}

async function summarize(
  image: LibraryImage,
  policy: NamePolicy,
  recorded: BaseFingerprint | null,
  log: Logger,
): Promise<Summarized> {
  const summary = emptySummary(image)
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

/** How a list may answer before every image is read. */
export interface ListOptions {
  /**
   * With at least 50 images to read, answer after this long: those not read yet are listed as
   * `pending`, and go on being read.
   */
  waitMs?: number
  /** Called with the paths listed as pending once they are all read (and kept). */
  onSettled?: (paths: string[]) => void
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
  /** Images being read now, so that lists asked at the same time read each once. */
  private readonly reading = new Map<string, Promise<Summarized>>()
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
    options: ListOptions = {},
  ): Promise<{ images: ImageSummary[]; warning: string | null }> {
    const data = await library.load()
    const warning = library.lastWarning
    library.lastWarning = null
    // One read of the library file serves the images, their fingerprints and the name policy.
    const policy = Library.policyOf(data)
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
    const recordedFor = (index: number): BaseFingerprint | null =>
      fingerprints.get(realPaths[index]!) ?? null
    const found: (Summarized | null)[] = new Array<Summarized | null>(data.images.length)
    // A base's file is in the identity of each of its 100 overlays: stat it once per list.
    const identityOf = memoized(fileIdentity)
    await inPool(data.images.length, PARALLEL_CHECKS, async (index) => {
      found[index] = await this.keptSummary(data.images[index]!, recordedFor(index), identityOf)
    })
    const unread = [...found.keys()].filter((index) => found[index] === null)
    const reads = inPool(unread.length, PARALLEL, async (position) => {
      const index = unread[position]!
      found[index] = await this.read(data.images[index]!, policy, recordedFor(index), log)
    })
    if (options.waitMs !== undefined && unread.length >= STREAM_FROM) {
      const timer = new Promise<false>((resolve) =>
        setTimeout(() => resolve(false), options.waitMs),
      )
      const settled = await Promise.race([reads.then(() => true as const), timer])
      if (!settled) {
        const pending = unread.filter((index) => found[index] === null)
        reads.then(
          () => options.onSettled?.(pending.map((index) => data.images[index]!.path)),
          (error: unknown) => log.error('Reading the library in the background failed', error),
        )
        for (const index of pending) found[index] = pendingSummary(data.images[index]!)
      }
    } else {
      await reads
    }
    const results = found as Summarized[]
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

  /** The kept summary of `image` if nothing it read changed, else null. */
  private async keptSummary(
    image: LibraryImage,
    recorded: BaseFingerprint | null,
    identityOf: (file: string) => Promise<FileIdentity>,
  ): Promise<Summarized | null> {
    const kept = this.kept.get(image.path)
    if (!kept || kept.fingerprint !== fingerprintKey(recorded) || !kept.result.files) return null
    const now = await filesIdentity(kept.result.files, identityOf)
    return now.text === kept.identity ? fresh(kept.result) : null
  }

  /** Read `image` (once, however many lists ask at the same time), and keep its summary. */
  private async read(
    image: LibraryImage,
    policy: NamePolicy,
    recorded: BaseFingerprint | null,
    log: Logger,
  ): Promise<Summarized> {
    const running = this.reading.get(image.path)
    if (running) return fresh(await running)
    const reading = this.readAndKeep(image, policy, recorded, log)
    this.reading.set(image.path, reading)
    try {
      return fresh(await reading)
    } finally {
      if (this.reading.get(image.path) === reading) this.reading.delete(image.path)
    }
  }

  private async readAndKeep(
    image: LibraryImage,
    policy: NamePolicy,
    recorded: BaseFingerprint | null,
    log: Logger,
  ): Promise<Summarized> {
    this.kept.delete(image.path)
    const started = Date.now()
    this.options.onRead?.(image.path)
    const result = await summarize(image, policy, recorded, log)
    if (result.files) {
      const identity = await filesIdentity(result.files)
      if (identity.newest <= started - this.quietMs) {
        this.kept.set(image.path, {
          result: fresh(result),
          identity: identity.text,
          fingerprint: fingerprintKey(recorded),
        })
      }
    }
    return result
  }
}

/** An image listed before it is read: its name, nothing else known yet. */
function pendingSummary(image: LibraryImage): Summarized {
  return {
    summary: { ...emptySummary(image), pending: true },
    backingRealPath: null,
    stopsShort: false,
    files: null,
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
