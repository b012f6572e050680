import { realpathSync } from 'node:fs'
import { readdir, stat } from 'node:fs/promises'
import { dirname, join, resolve } from 'node:path'
import { throwIfAborted } from '../errors'
import { realPath } from '../fs'
import { isBaseFingerprint, type BaseFingerprint, type Library } from '../library'
import { STRICT_POLICY, type NamePolicy } from '../names'
import { inspectImage, type InspectedImage } from './inspect'

export type { NodeState, ParentProblem } from './inspect'

/** Folder entries looked at per folder; a bigger folder is searched only this far. */
export const MAX_FOLDER_ENTRIES = 20_000
/** Images inspected per graph; the graph says when it stopped short. */
export const MAX_GRAPH_NODES = 50_000
/** Files inspected at once. */
const PARALLEL = 4

/**
 * How a child depends on its parent: it `reads` through it, it does `not-read` it (fully
 * allocated: ALL_ALLOCATED or every cluster set), or it is `unknown` (the child could not be
 * read, or its header names no file the graph can point at).
 */
export type EdgeKind = 'reads' | 'not-read' | 'unknown'

/**
 * One image of the graph: a file of the library, of a library image's folder, of a folder the
 * question named, or a base one of those names. Keyed by real path.
 */
export interface GraphNode extends InspectedImage {
  /** How it depends on {@link parent}; null when it names no base. */
  edge: EdgeKind | null
  /** The base fingerprint the library records for it as an overlay, or null. */
  fingerprint: BaseFingerprint | null
  inLibrary: boolean
  /** The cycle of stored names this node is part of, in order, starting at this node. */
  loop: string[] | null
}

/** One answer to "who depends on whom", built once per question. */
export interface ChainGraph {
  /** Every node, by real path. */
  nodes: ReadonlyMap<string, GraphNode>
  /** Each cycle of stored names once, as real paths in order (the first repeats nowhere). */
  loops: string[][]
  /** Folders listed (library images' folders and the question's). */
  searched: string[]
  /** Folders cut short at {@link MAX_FOLDER_ENTRIES}, and whether {@link MAX_GRAPH_NODES} was hit. */
  truncated: string[]
  nodeLimitHit: boolean
}

/** An image whose guest view a change of the asked file would change (or might: `unknown`). */
export interface GraphDependent extends GraphNode {
  /** `reads`: it reads through the asked file for sure; `unknown`: it could not be ruled out. */
  dependsHow: 'reads' | 'unknown'
  /** The chain from this image down to the asked file (real paths, this image first). */
  through: string[]
}

/** What {@link buildGraph} needs. */
export interface BuildGraphInput {
  /** The library: its images and their folders are searched; its trust and fingerprints used. */
  library: Library | null
  /** More files (they and their folders are searched) or folders (searched). */
  extra?: string[]
  signal?: AbortSignal
  /** The name policy that judges images' data-file names (default: the library's). */
  policy?: NamePolicy
  /**
   * Search no folder: only the library's images, `extra` (files) and the bases they name,
   * transitively. Enough for "what is below this image" (loops, rebase), not for "who stands
   * on it".
   */
  chainsOnly?: boolean
  /**
   * Read stored names only, from headers where the format can (no bitmap is read): enough for
   * loops and what lies below an image, never for a blast radius. Every edge with a base is then
   * `unknown`.
   */
  namesOnly?: boolean
}

function edgeOf(node: InspectedImage, namesOnly: boolean): EdgeKind | null {
  if (node.backingName === null) {
    // An image whose header could not be read may name any base.
    return node.parentProblem === 'unreadable' || node.parentProblem === 'unparseable'
      ? 'unknown'
      : null
  }
  if (node.state !== 'ok' || node.parent === null || namesOnly) return 'unknown'
  if (node.fullyAllocated === true) return 'not-read'
  return 'reads'
}

async function listFolder(folder: string, truncated: string[]): Promise<string[]> {
  let entries
  try {
    entries = await readdir(folder, { withFileTypes: true })
  } catch {
    return []
  }
  if (entries.length > MAX_FOLDER_ENTRIES) truncated.push(folder)
  return entries
    .slice(0, MAX_FOLDER_ENTRIES)
    .filter((entry) => entry.isFile() || entry.isSymbolicLink())
    .map((entry) => join(folder, entry.name))
}

/** Find every cycle of parent links once (each node is walked once: linear in the graph). */
function findLoops(nodes: Map<string, GraphNode>): string[][] {
  const loops: string[][] = []
  const done = new Set<string>()
  for (const start of nodes.keys()) {
    if (done.has(start)) continue
    const order: string[] = []
    const position = new Map<string, number>()
    let current: string | null = start
    while (current !== null && !done.has(current) && nodes.has(current)) {
      if (position.has(current)) {
        const cycle = order.slice(position.get(current))
        loops.push(cycle)
        break
      }
      position.set(current, order.length)
      order.push(current)
      current = nodes.get(current)!.parent
    }
    for (const path of order) done.add(path)
  }
  for (const cycle of loops) {
    for (const [index, path] of cycle.entries()) {
      nodes.get(path)!.loop = [...cycle.slice(index), ...cycle.slice(0, index)]
    }
  }
  return loops
}

/**
 * Build the dependency graph for one question: the library's images, every file in their
 * folders and in the folders of `extra`, and, transitively, every base those name (followed by
 * stored name, whether or not the image reads it, so that loops through flattened layers are
 * found). Each file is inspected alone (no chain is opened) and never makes this throw: what
 * cannot be read becomes a node with a state and a problem. Work is bounded: folders are listed
 * to {@link MAX_FOLDER_ENTRIES} entries, the graph stops at {@link MAX_GRAPH_NODES} images, and
 * both limits are reported.
 */
export async function buildGraph(input: BuildGraphInput): Promise<ChainGraph> {
  const data = input.library ? await input.library.load() : null
  const policy = input.policy ?? (input.library ? await input.library.policy() : STRICT_POLICY)
  const fingerprints = new Map<string, BaseFingerprint>()
  for (const entry of data?.fingerprints ?? []) {
    if (isBaseFingerprint(entry)) fingerprints.set(entry.overlay, entry)
  }
  const libraryPaths = new Set<string>()
  const seeds: string[] = []
  const folders = new Set<string>()
  for (const image of data?.images ?? []) {
    const real = await realPath(image.path)
    libraryPaths.add(real)
    seeds.push(real)
    folders.add(dirname(real))
  }
  for (const entry of input.extra ?? []) {
    const absolute = resolve(entry)
    const isFolder = await stat(absolute).then(
      (info) => info.isDirectory(),
      () => false,
    )
    if (isFolder) {
      folders.add(await realPath(absolute))
    } else {
      seeds.push(absolute)
      folders.add(dirname(await realPath(absolute)))
    }
  }
  if (input.chainsOnly) folders.clear()
  const truncated: string[] = []
  const queue: string[] = [...seeds]
  for (const folder of folders) {
    throwIfAborted(input.signal, 'build the dependency graph')
    queue.push(...(await listFolder(folder, truncated)))
  }

  const nodes = new Map<string, GraphNode>()
  const claimed = new Set<string>()
  let nodeLimitHit = false
  const inspect = async (candidate: string): Promise<void> => {
    const real = await realPath(candidate)
    if (claimed.has(real)) return
    if (claimed.size >= MAX_GRAPH_NODES) {
      nodeLimitHit = true
      return
    }
    claimed.add(real)
    const found = await inspectImage(real, policy, { namesOnly: input.namesOnly ?? false })
    // A file named only in a folder listing that vanished or is not a file is not a node.
    if (found === null || (found.state === 'missing' && !libraryPaths.has(real))) return
    nodes.set(real, {
      ...found,
      edge: edgeOf(found, input.namesOnly ?? false),
      fingerprint: fingerprints.get(real) ?? null,
      inLibrary: libraryPaths.has(real),
      loop: null,
    })
    // Follow the base by its stored name (also when not read), so the graph holds every chain.
    if (found.parent !== null && found.parentProblem === null) queue.push(found.parent)
  }
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < queue.length) {
      throwIfAborted(input.signal, 'build the dependency graph')
      await inspect(queue[next++]!)
    }
  }
  // Workers stop when the queue is drained; a node found late re-arms them.
  while (next < queue.length) {
    await Promise.all(Array.from({ length: PARALLEL }, worker))
  }
  const loops = findLoops(nodes)
  return { nodes, loops, searched: [...folders], truncated, nodeLimitHit }
}

/**
 * The graph's key for `path`: itself when the graph holds it, else its real path (symbolic
 * links resolved), else the path made absolute (a missing file). Nodes are keyed by real path.
 */
export function nodeKey(graph: ChainGraph, path: string): string {
  if (graph.nodes.has(path)) return path
  try {
    return realpathSync(path)
  } catch {
    return resolve(path)
  }
}

/** The children of each parent path. */
function childrenIndex(graph: ChainGraph): Map<string, GraphNode[]> {
  const children = new Map<string, GraphNode[]>()
  for (const node of graph.nodes.values()) {
    if (node.parent === null) continue
    const list = children.get(node.parent) ?? []
    list.push(node)
    children.set(node.parent, list)
  }
  return children
}

/** The stored-name chain below `path` (real paths, `path` first), stopping at a repeat. */
export function ancestorsOf(graph: ChainGraph, path: string): string[] {
  const chain: string[] = []
  const seen = new Set<string>()
  for (let current: string | null = path; current !== null && !seen.has(current);) {
    seen.add(current)
    chain.push(current)
    current = graph.nodes.get(current)?.parent ?? null
  }
  return chain
}

/**
 * The images whose guest view changes if the file at `path` (a real path) changes, transitively:
 * children that read through it, their children that read through them, and so on, stopping at
 * fully allocated layers. Images that could not be ruled out come with `dependsHow: 'unknown'`:
 * a child that could not be read, everything that stands on such a child, and every image whose
 * header could not be read or names no file (it may name anything). `path` itself and the chain
 * below it are never listed. Sorted by path. `asked` may be any spelling of the path (it is
 * resolved to the graph's key, its real path).
 */
export function dependentsOf(graph: ChainGraph, asked: string): GraphDependent[] {
  const path = nodeKey(graph, asked)
  const children = childrenIndex(graph)
  const found = new Map<string, GraphDependent>()
  const below = new Set(ancestorsOf(graph, path))
  const walk = (from: string, how: 'reads' | 'unknown', through: string[]): void => {
    for (const child of children.get(from) ?? []) {
      if (below.has(child.path) || found.has(child.path) || child.edge === 'not-read') continue
      const childHow = how === 'reads' && child.edge === 'reads' ? 'reads' : 'unknown'
      const chain = [child.path, ...through]
      found.set(child.path, { ...child, dependsHow: childHow, through: chain })
      walk(child.path, childHow, chain)
    }
  }
  walk(path, 'reads', [path])
  // Images that name no file the graph can point at: they, and what stands on them, may depend.
  for (const node of graph.nodes.values()) {
    if (node.parent !== null || node.edge !== 'unknown') continue
    if (below.has(node.path) || found.has(node.path)) continue
    found.set(node.path, { ...node, dependsHow: 'unknown', through: [node.path] })
    walk(node.path, 'unknown', [node.path])
  }
  return [...found.values()].sort((a, b) => a.path.localeCompare(b.path))
}

/**
 * The cycle that pointing `overlay` at `newBase` would close, or null: the stored-name chain
 * below the new base (through flattened layers too) reaches the overlay. The cycle starts and
 * ends at the overlay: [overlay, newBase, ..., overlay].
 */
export function cycleThrough(graph: ChainGraph, overlay: string, newBase: string): string[] | null {
  const chain = ancestorsOf(graph, newBase)
  const index = chain.indexOf(overlay)
  if (index < 0) return null
  return [overlay, ...chain.slice(0, index + 1)]
}

/** The loop (if any) in the stored-name chain below `path`: the cycle, in order. */
export function loopBelow(graph: ChainGraph, path: string): string[] | null {
  for (const member of ancestorsOf(graph, path)) {
    const loop = graph.nodes.get(member)?.loop
    if (loop) return loop
  }
  return null
}
