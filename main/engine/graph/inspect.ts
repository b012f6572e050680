import { open, stat } from 'node:fs/promises'
import type { NameVerdictReason } from '../../../shared/image-types'
import type { BackingLink, Disk, OpenOptions } from '../disk'
import { EngineError, isEngineError } from '../errors'
import { realPath } from '../fs'
import { recognizeImageMagic } from '../formats/common/unrecorded-format'
import { assertFollowable, judgeName, type NamePolicy } from '../names'
import { isUndoJournalHead } from '../ops/undo-journal'
import { probeHead } from '../registry'
import { MAX_NAME, storedBackingName } from './header-names'

/** Bytes read to recognise a format (as open.ts probes). */
const PROBE_BYTES = 4096

/** Whether the engine could read an image itself. */
export type NodeState = 'ok' | 'missing' | 'unreadable' | 'unparseable'

/**
 * Why an image's parent is not a file the graph can point at: the name resolves to no file
 * (`missing`, the path is still known), it is a protocol, `json:`, device or folder name
 * (`refused-name`), or the image's own header could not be read (`unreadable`) or parsed
 * (`unparseable`), so which base it names is not known.
 */
export type ParentProblem = 'missing' | 'refused-name' | 'unreadable' | 'unparseable'

/** What one file says about itself, before the graph links it to the others. */
export interface InspectedImage {
  /** Real path (symbolic links resolved). */
  path: string
  /** Format by probe (the user's own files: the library's and its folders'), null when unknown. */
  format: string | null
  state: NodeState
  /** One sentence saying why the image could not be read (state other than 'ok'). */
  problem: string | null
  /** The backing name as stored, and the format the image records for it. */
  backingName: string | null
  backingFormat: string | null
  /** Real path of the file the name resolves to (also when missing), null when unknowable. */
  parent: string | null
  parentProblem: ParentProblem | null
  /** The name policy's verdict on the backing name (whether this tool would follow it). */
  nameVerdict: NameVerdictReason | null
  /**
   * The image never reads its backing file: ALL_ALLOCATED, or every cluster set. null when it
   * could not be told (unreadable; or a format that cannot count its clusters, such as qcow2,
   * which is then taken to read its base).
   */
  fullyAllocated: boolean | null
}

/** The error codes that mean "the file is damaged or not understood", not "cannot get at it". */
const UNPARSEABLE: ReadonlySet<string> = new Set([
  'CORRUPT_IMAGE',
  'CORRUPT_HEADER',
  'UNSUPPORTED_FORMAT',
  'UNSUPPORTED_FEATURE',
  'SIZE_LIMIT',
  'FORMAT_MISMATCH',
  'SAME_FILE',
])

function describe(error: unknown, path: string): { state: NodeState; problem: string } {
  if (isEngineError(error)) {
    return {
      state: UNPARSEABLE.has(error.code) ? 'unparseable' : 'unreadable',
      problem: error.message,
    }
  }
  const code = (error as NodeJS.ErrnoException | null)?.code
  return {
    state: 'unreadable',
    problem: `${path} could not be read${code ? ` (${code})` : ''}.`,
  }
}

async function readHead(path: string): Promise<{ head: Buffer; length: number }> {
  const handle = await open(path, 'r')
  try {
    const { size } = await handle.stat()
    const head = Buffer.alloc(Math.min(PROBE_BYTES, size))
    await handle.read(head, 0, head.length, 0)
    return { head, length: size }
  } finally {
    await handle.close()
  }
}

/**
 * Open one layer alone: its chain is never opened (openBacking answers null), its data file
 * only as the policy allows. What the graph asks of it is its link and its allocation.
 */
function layerOnly(real: string, policy: NamePolicy): OpenOptions {
  return {
    readOnly: true,
    policy,
    depth: 0,
    visited: new Set([real]),
    // Lenient only so that a qcow2 or cow file whose base's format is ambiguous still opens
    // (its link then records no format); both names are judged here, never followed.
    lenient: true,
    openBacking: async () => null,
    async judgeDataFile(namingFile, storedName, format) {
      const verdict = await judgeName(namingFile, storedName, format, policy)
      assertFollowable(namingFile, 'image file', verdict)
      if (verdict.realPath === real) {
        throw new EngineError(
          'SAME_FILE',
          `The image file '${storedName}' of ${namingFile} is the file itself.`,
          { path: namingFile, field: 'image name', value: storedName },
        )
      }
      return verdict
    },
  }
}

function fullyAllocatedOf(disk: Disk): boolean | null {
  if (disk.isAllAllocated?.()) return true
  const count = disk.allocationCount?.()
  if (count) return count.allocated >= count.total
  return null
}

/** Where a stored name points, and why the graph cannot follow it when it cannot. */
async function resolveParent(
  real: string,
  link: BackingLink,
  policy: NamePolicy,
): Promise<Pick<InspectedImage, 'parent' | 'parentProblem' | 'nameVerdict'>> {
  if (link.name.length > MAX_NAME) {
    return { parent: null, parentProblem: 'unparseable', nameVerdict: null }
  }
  const verdict = await judgeName(real, link.name, link.format, policy)
  switch (verdict.reason) {
    case 'json':
    case 'protocol':
      return { parent: null, parentProblem: 'refused-name', nameVerdict: verdict.reason }
    case 'device':
    case 'not-regular-file':
      return {
        parent: await realPath(verdict.resolved),
        parentProblem: 'refused-name',
        nameVerdict: verdict.reason,
      }
    case 'missing':
      return {
        parent: await realPath(verdict.resolved),
        parentProblem: 'missing',
        nameVerdict: 'missing',
      }
    default:
      return { parent: verdict.realPath, parentProblem: null, nameVerdict: verdict.reason }
  }
}

/**
 * Inspect the file at `path` for the dependency graph: its format, the name of its base and
 * where it leads, and whether it reads that base at all. Never throws for what the file holds:
 * a file that cannot be read or parsed comes back with a state and a problem sentence (and,
 * when its header still names a base, that name). Returns null for what is not an image
 * candidate at all (a folder, a socket, a dangling link found in a folder). With `namesOnly`,
 * a format that can read its links from the header alone is not opened: the name is read, the
 * allocation is not (`fullyAllocated` null).
 */
export async function inspectImage(
  path: string,
  policy: NamePolicy,
  options: { namesOnly?: boolean } = {},
): Promise<InspectedImage | null> {
  const real = await realPath(path)
  const node: InspectedImage = {
    path: real,
    format: null,
    state: 'ok',
    problem: null,
    backingName: null,
    backingFormat: null,
    parent: null,
    parentProblem: null,
    nameVerdict: null,
    fullyAllocated: null,
  }
  // A symbolic link that leads nowhere (or around in circles) names no file at all; nor does a
  // file removed between the folder listing and its reading (a lock file beside the library).
  const gone = (error: unknown): InspectedImage | null => {
    const code = (error as NodeJS.ErrnoException | null)?.code
    if (code === 'ENOENT' || code === 'ELOOP' || code === 'ENOTDIR') {
      return { ...node, state: 'missing', problem: `${real} does not exist.` }
    }
    return null
  }
  let info
  try {
    info = await stat(real)
  } catch (error) {
    return gone(error) ?? { ...node, ...describe(error, real), parentProblem: 'unreadable' }
  }
  if (!info.isFile()) return null
  let head
  try {
    head = await readHead(real)
  } catch (error) {
    return gone(error) ?? { ...node, ...describe(error, real), parentProblem: 'unreadable' }
  }
  // A commit's undo journal often lies beside the images; it is no image.
  if (isUndoJournalHead(head.head)) return null
  const format = probeHead(head.head, head.length)
  if (format.fallback) {
    const magic = recognizeImageMagic(head.head)
    if (magic !== null) {
      return {
        ...node,
        state: 'unparseable',
        problem: `${real} starts like a ${magic} image, which this tool cannot read.`,
        parentProblem: 'unparseable',
      }
    }
    return { ...node, format: format.name, fullyAllocated: true }
  }
  node.format = format.name
  const driver = await format.load()
  if (options.namesOnly && driver.readLinks) {
    // The header alone: the stored name, not the allocation (fullyAllocated stays unknown).
    try {
      const { backing } = await driver.readLinks(real)
      if (backing === null) return node
      return {
        ...node,
        backingName: backing.name,
        backingFormat: backing.format,
        ...(await resolveParent(real, backing, policy)),
      }
    } catch {
      // a damaged header: the full inspection below says why, and finds what it can
    }
  }
  let disk: Disk
  try {
    disk = await driver.open(real, layerOnly(real, policy))
  } catch (error) {
    // The layer cannot be read: its header may still name its base (an edge of unknown kind).
    Object.assign(node, describe(error, real))
    let link: BackingLink | null = null
    let readable = false
    try {
      const links = await driver.readLinks?.(real)
      if (links) {
        link = links.backing
        readable = true
      }
    } catch {
      // the header itself is damaged: fall back to the bytes that locate the name
    }
    if (!readable) {
      const stored = await storedBackingName(real)
      if (stored) {
        link = { name: stored.name, format: null }
        readable = true
      }
    }
    if (!readable)
      return { ...node, parentProblem: node.state === 'unreadable' ? 'unreadable' : 'unparseable' }
    if (link === null) return node
    return {
      ...node,
      backingName: link.name,
      backingFormat: link.format,
      ...(await resolveParent(real, link, policy)),
    }
  }
  try {
    const link = disk.backingLink?.() ?? null
    if (link === null) return { ...node, fullyAllocated: true }
    return {
      ...node,
      backingName: link.name,
      backingFormat: link.format,
      fullyAllocated: fullyAllocatedOf(disk),
      ...(await resolveParent(real, link, policy)),
    }
  } finally {
    await disk.close().catch(() => undefined)
  }
}
