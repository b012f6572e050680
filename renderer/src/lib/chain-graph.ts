import type { ImageSummary } from '../../../shared/ipc/contract'
import { baseName, formatBytes } from '../composables/use-format'
import type { StatusColors } from '../composables/use-status-colors'
import type { LegendItem } from './legend'
import { foldForSearch, searchWords } from './search'

/**
 * The chain browser's graph, computed without Vue or the DOM: one node per library image and
 * per base it names that the library does not hold, one edge from each overlay to its base,
 * laid out left to right (bases on the left, overlays fanning out to the right). Every image
 * has at most one base, so the graph is a forest and a tidy-tree layout never crosses edges.
 */

/**
 * The state of a link from an overlay to its base (the library summary's base status), or
 * `loop` for a link of a loop of base names.
 */
export type LinkStatus =
  'ok' | 'missing' | 'refused' | 'changed' | 'unverified' | 'not-read' | 'loop'

/** Which of the theme's colours draws a link. */
export type LinkTone = 'line' | 'warning' | 'error'

/** How a link of each status is drawn (colour and dash), and what the legend calls it. */
export const LINK_STYLES: Readonly<
  Record<LinkStatus, { tone: LinkTone; dash?: string; label: string }>
> = {
  ok: { tone: 'line', label: 'base matches' },
  unverified: { tone: 'warning', label: 'base unverified' },
  'not-read': { tone: 'line', dash: '1 4', label: 'base not read (flattened)' },
  changed: { tone: 'error', dash: '10 3 2 3', label: 'base changed' },
  refused: { tone: 'warning', dash: '2 4', label: 'untrusted base' },
  missing: { tone: 'error', dash: '6 4', label: 'base missing' },
  loop: { tone: 'error', label: 'base names loop' },
}

/** The dash of a node outside the library (a base the library does not hold), or missing. */
export const OUTSIDE_DASH = '5 4'

/** The chain browser's legend: every kind of link, then a base outside the library. */
export function chainLegend(colors: Pick<StatusColors, LinkTone>): LegendItem[] {
  const links = (Object.keys(LINK_STYLES) as LinkStatus[]).map((status) => {
    const { tone, dash, label } = LINK_STYLES[status]
    return { key: status, label, swatch: { shape: 'line' as const, color: colors[tone], dash } }
  })
  return [
    ...links,
    {
      key: 'outside',
      label: 'not in the library',
      swatch: { shape: 'box', color: colors.line, dash: OUTSIDE_DASH },
    },
  ]
}

/**
 * What the node stands for: a library image, a base outside the library, or the overlays of a
 * large fan-out left out of the drawing ("+97 more overlays", expanded on demand).
 */
export type NodeKind = 'image' | 'outside' | 'more'

/** One image in the graph. */
export interface ChainNode {
  /** The path, unique in the graph. */
  id: string
  name: string
  kind: NodeKind
  format: string | null
  virtualSize: number | null
  /** The base file does not exist (a base an overlay names). */
  missing: boolean
  /** The image could not be read (its summary's error). */
  error: string | null
  /** The node's base, if the image has one the graph shows. */
  base: string | null
  /** How the link to the base stands. */
  link: LinkStatus | null
  /**
   * The loop of base names this image is part of (this image first), or null. One member of a
   * loop is laid out in the first column, but it is no root: its base is {@link loopBase}.
   */
  loop: string[] | null
  /** The base of a loop member laid out in the first column (its link is drawn back to it). */
  loopBase: string | null
  overlays: string[]
  /** With kind `more`: how many overlays of {@link base} it stands for. */
  hiddenCount: number
  /** Column (0 for images without a base in the graph) and position, in pixels. */
  level: number
  x: number
  y: number
}

/** One overlay → base link. */
export interface ChainEdge {
  id: string
  overlay: string
  base: string
  status: LinkStatus
  /** SVG path from the base's right side to the overlay's left side. */
  path: string
}

/** The whole graph, with the size of the drawing. */
export interface ChainGraph {
  /** The nodes drawn (a collapsed fan-out's hidden overlays are not among them). */
  nodes: ChainNode[]
  edges: ChainEdge[]
  width: number
  height: number
  /** Every node, drawn or hidden in a collapsed fan-out, by id: for search and reveal. */
  all: ReadonlyMap<string, ChainNode>
}

/** How a graph is drawn: which fan-outs are collapsed. */
export interface FanOutOptions {
  /** A base with more overlays than this shows only the first {@link shown} of them. */
  limit: number
  /** The overlays a collapsed fan-out still shows, before its "more" node. */
  shown: number
  /** Bases whose fan-out the user expanded (ids). */
  expanded: ReadonlySet<string>
}

/** Fan-outs of more than 10 overlays show 3 and a "+N more overlays" node. */
export const FAN_OUT: FanOutOptions = { limit: 10, shown: 3, expanded: new Set() }

/** The id of the node that stands for the hidden overlays of `base`. */
export function moreNodeId(base: string): string {
  return `${base}\u0000more`
}

/** Sizes of the drawing, in pixels. */
export interface GraphGeometry {
  nodeWidth: number
  nodeHeight: number
  columnGap: number
  rowGap: number
  margin: number
}

/** The default sizes of the drawing. */
export const GEOMETRY: GraphGeometry = {
  nodeWidth: 236,
  nodeHeight: 60,
  columnGap: 72,
  rowGap: 16,
  margin: 8,
}

function byName(nodes: Map<string, ChainNode>) {
  return (a: string, b: string): number => {
    const first = nodes.get(a)
    const second = nodes.get(b)
    // Numbers as people count them: vm-2 before vm-10.
    return (
      (first?.name ?? a).localeCompare(second?.name ?? b, undefined, { numeric: true }) ||
      a.localeCompare(b)
    )
  }
}

/**
 * Build and lay out the graph of the library's images. A base with more overlays than
 * `fanOut.limit` (and not in `fanOut.expanded`) draws its first `fanOut.shown` overlays and one
 * "more" node for the rest, so a library of 1,000 overlays on 10 bases draws 40 nodes.
 */
export function buildChainGraph(
  images: readonly ImageSummary[],
  geometry: GraphGeometry = GEOMETRY,
  fanOut: FanOutOptions = FAN_OUT,
): ChainGraph {
  const nodes = new Map<string, ChainNode>()
  for (const image of images) {
    nodes.set(image.path, {
      id: image.path,
      name: image.name,
      kind: 'image',
      format: image.format,
      virtualSize: image.virtualSize,
      missing: false,
      error: image.error?.message ?? null,
      base: null,
      link: null,
      loop: image.loop,
      loopBase: null,
      overlays: [],
      hiddenCount: 0,
      level: 0,
      x: 0,
      y: 0,
    })
  }
  // Link each overlay to its base: the library says which images use a base by real path
  // (dependents); a base it could not follow (missing, refused) is matched by path, or shown
  // as a node of its own outside the library.
  const baseOf = new Map<string, string>()
  for (const image of images) {
    for (const dependent of image.dependents) {
      if (dependent !== image.path && nodes.has(dependent) && !baseOf.has(dependent))
        baseOf.set(dependent, image.path)
    }
  }
  for (const image of images) {
    if (image.base.status === 'none' || baseOf.has(image.path)) continue
    const target = image.base.path ?? image.base.stored
    if (target === null) continue
    if (!nodes.has(target)) {
      nodes.set(target, {
        id: target,
        name: baseName(target),
        kind: 'outside',
        format: null,
        virtualSize: null,
        missing: image.base.status === 'missing',
        error: null,
        base: null,
        link: null,
        loop: null,
        loopBase: null,
        overlays: [],
        hiddenCount: 0,
        level: 0,
        x: 0,
        y: 0,
      })
    } else if (image.base.status === 'missing') {
      nodes.get(target)!.missing = true
    }
    if (target !== image.path) baseOf.set(image.path, target)
  }
  const statusOf = new Map(images.map((image) => [image.path, image.base.status]))
  for (const [overlay, base] of baseOf) {
    const node = nodes.get(overlay)!
    const status = statusOf.get(overlay)
    node.base = base
    node.link = node.loop?.includes(base)
      ? 'loop'
      : status === undefined || status === 'none'
        ? 'ok'
        : status
    nodes.get(base)!.overlays.push(overlay)
  }
  // Lay a loop (images naming each other) out as a chain: the first member met goes to the
  // first column, its link drawn back to its base; it stays marked as a loop member.
  for (const node of nodes.values()) {
    const seen = new Set<string>([node.id])
    let current = node.base
    while (current !== null) {
      if (seen.has(current)) {
        const looped = nodes.get(current)!
        const parent = looped.base === null ? null : nodes.get(looped.base)
        if (parent) parent.overlays = parent.overlays.filter((id) => id !== looped.id)
        looped.loopBase = looped.base
        looped.loop ??= [looped.id]
        looped.base = null
        break
      }
      seen.add(current)
      current = nodes.get(current)?.base ?? null
    }
  }
  const order = byName(nodes)
  for (const node of nodes.values()) node.overlays.sort(order)
  const all = new Map(nodes)
  collapseFanOuts(nodes, all, fanOut)

  // Tidy tree: leaves take the next row, a base sits in the middle of its overlays' rows.
  const rowHeight = geometry.nodeHeight + geometry.rowGap
  const columnWidth = geometry.nodeWidth + geometry.columnGap
  let nextRow = 0
  let deepest = 0
  const place = (id: string, level: number): number => {
    const node = nodes.get(id)!
    node.level = level
    node.x = geometry.margin + level * columnWidth
    deepest = Math.max(deepest, level)
    if (node.overlays.length === 0) {
      node.y = geometry.margin + nextRow++ * rowHeight
      return node.y
    }
    const rows = node.overlays.map((overlay) => place(overlay, level + 1))
    node.y = (rows[0]! + rows[rows.length - 1]!) / 2
    return node.y
  }
  const roots = [...nodes.values()].filter((node) => node.base === null).map((node) => node.id)
  for (const root of roots.sort(order)) place(root, 0)

  const edges: ChainEdge[] = []
  let loopDepth = 0
  for (const node of nodes.values()) {
    const back = node.loopBase === null ? undefined : nodes.get(node.loopBase)
    if (!back) continue
    // Below the nodes, from the base's bottom back to the first member's bottom.
    const x1 = back.x + geometry.nodeWidth / 2
    const y1 = back.y + geometry.nodeHeight
    const x2 = node.x + geometry.nodeWidth / 2
    const y2 = node.y + geometry.nodeHeight
    const low = Math.max(y1, y2) + LOOP_DROP
    loopDepth = Math.max(loopDepth, LOOP_DROP)
    edges.push({
      id: `${node.id}→${back.id}`,
      overlay: node.id,
      base: back.id,
      status: 'loop',
      path: `M ${x1} ${y1} C ${x1} ${low}, ${x2} ${low}, ${x2} ${y2}`,
    })
  }
  for (const node of nodes.values()) {
    if (node.base === null || node.link === null) continue
    const base = nodes.get(node.base)!
    const x1 = base.x + geometry.nodeWidth
    const y1 = base.y + geometry.nodeHeight / 2
    const x2 = node.x
    const y2 = node.y + geometry.nodeHeight / 2
    const bend = (x2 - x1) / 2
    edges.push({
      id: `${node.id}→${base.id}`,
      overlay: node.id,
      base: base.id,
      status: node.link,
      path: `M ${x1} ${y1} C ${x1 + bend} ${y1}, ${x2 - bend} ${y2}, ${x2} ${y2}`,
    })
  }
  const ordered = [...nodes.values()].sort((a, b) => a.level - b.level || a.y - b.y)
  return {
    nodes: ordered,
    edges,
    width:
      nodes.size === 0 ? 0 : 2 * geometry.margin + (deepest + 1) * columnWidth - geometry.columnGap,
    height:
      nodes.size === 0
        ? 0
        : 2 * geometry.margin + nextRow * rowHeight - geometry.rowGap + loopDepth,
    all,
  }
}

/**
 * Leave out of `nodes` the overlays of each large fan-out past the first `shown` (and all that
 * stands on them), and put in their place one node of kind `more` that counts them.
 */
function collapseFanOuts(
  nodes: Map<string, ChainNode>,
  all: Map<string, ChainNode>,
  fanOut: FanOutOptions,
): void {
  const drop = (id: string): void => {
    const node = nodes.get(id)
    if (!node) return
    nodes.delete(id)
    for (const overlay of node.overlays) drop(overlay)
  }
  for (const node of [...nodes.values()]) {
    if (node.overlays.length <= fanOut.limit || fanOut.expanded.has(node.id)) continue
    if (!nodes.has(node.id)) continue
    const hidden = node.overlays.slice(fanOut.shown)
    for (const overlay of hidden) drop(overlay)
    const more: ChainNode = {
      id: moreNodeId(node.id),
      name: `+${hidden.length} more overlays`,
      kind: 'more',
      format: null,
      virtualSize: null,
      missing: false,
      error: null,
      base: node.id,
      link: 'ok',
      loop: null,
      loopBase: null,
      overlays: [],
      hiddenCount: hidden.length,
      level: 0,
      x: 0,
      y: 0,
    }
    nodes.set(more.id, more)
    all.set(more.id, more)
    node.overlays = [...node.overlays.slice(0, fanOut.shown), more.id]
  }
}

/**
 * The bases to expand so that `id` is drawn: every base below it whose fan-out hides the
 * overlay on the way to it.
 */
export function basesToReveal(graph: ChainGraph, id: string): string[] {
  const bases: string[] = []
  const seen = new Set<string>()
  let current = graph.all.get(id)
  while (current && !seen.has(current.id)) {
    seen.add(current.id)
    const base = current.base ?? current.loopBase
    if (base === null) break
    // A collapsed fan-out lists its "more" node in place of the overlays it hides.
    const drawnOverlays = graph.all.get(base)?.overlays ?? []
    if (drawnOverlays.includes(moreNodeId(base)) && !drawnOverlays.includes(current.id))
      bases.push(base)
    current = graph.all.get(base)
  }
  return bases
}

/**
 * The nodes (drawn or hidden) whose name or path holds every word of `query`, by name
 * (`vm-2` before `vm-10`); none for an empty query. "More" nodes are never found.
 */
export function searchGraph(graph: ChainGraph, query: string): ChainNode[] {
  const words = searchWords(query)
  if (words.length === 0) return []
  const found = [...graph.all.values()].filter((node) => {
    if (node.kind === 'more') return false
    const haystack = foldForSearch(`${node.name} ${node.id}`)
    return words.every((word) => haystack.includes(word))
  })
  return found.sort(
    (a, b) =>
      a.name.localeCompare(b.name, undefined, { numeric: true }) || a.id.localeCompare(b.id),
  )
}

/** How far below the nodes a loop's closing link bends, in pixels. */
const LOOP_DROP = 36

const LINK_WORDS: Record<LinkStatus, string> = {
  ok: 'base matches its fingerprint',
  unverified: 'base unverified (no fingerprint recorded)',
  'not-read': 'base not read (flattened)',
  missing: 'base missing',
  refused: 'base not followed (untrusted)',
  changed: 'base changed since the overlay was made',
  loop: 'the base names loop back to this image',
}

/** The short state shown on a node, or null when all is well. */
export function nodeBadge(node: ChainNode): { text: string; tone: 'error' | 'warning' } | null {
  if (node.loop !== null) return { text: 'Loop', tone: 'error' }
  if (node.error !== null) return { text: 'Unreadable', tone: 'error' }
  if (node.missing) return { text: 'Missing', tone: 'error' }
  if (node.link === 'missing') return { text: 'Base missing', tone: 'error' }
  if (node.link === 'changed') return { text: 'Base changed', tone: 'error' }
  if (node.link === 'unverified') return { text: 'Unverified', tone: 'warning' }
  if (node.link === 'refused') return { text: 'Untrusted base', tone: 'warning' }
  return null
}

/** The node's second line: format and size, or why they are unknown. */
export function nodeDetail(node: ChainNode): string {
  if (node.kind === 'more') return 'Show them all'
  if (node.missing) return 'file not found'
  if (node.kind === 'outside') return 'not in the library'
  if (node.error !== null) return 'could not be read'
  return [node.format ?? '?', formatBytes(node.virtualSize)].join(' · ')
}

/**
 * What a screen reader says for a node: first the words the node shows (its name, its second
 * line and its badge, in that order, so that speech input finds the node by what is seen),
 * then what it is, its base and its overlays.
 */
export function nodeLabel(graph: ChainGraph, node: ChainNode): string {
  const nameOf = (id: string): string => graph.all.get(id)?.name ?? id
  if (node.kind === 'more') {
    const base = node.base === null ? '' : ` on ${nameOf(node.base)}`
    return `${node.name}, ${nodeDetail(node)}: the overlays${base} not drawn; press Enter`
  }
  const parts = [node.name, nodeDetail(node)]
  const badge = nodeBadge(node)
  if (badge) parts.push(badge.text)
  if (node.error !== null) parts.push(node.error)
  if (node.loop !== null) {
    const cycle = [...node.loop, node.loop[0]!].map(nameOf).join(' → ')
    parts.push(`in a loop of base names: ${cycle}; its chain never ends`)
  }
  if (node.base !== null && node.link !== null) {
    parts.push(`overlay on ${nameOf(node.base)}, ${LINK_WORDS[node.link]}`)
  } else if (node.loopBase !== null) {
    parts.push(`overlay on ${nameOf(node.loopBase)}, ${LINK_WORDS.loop}`)
  } else if (node.kind === 'image') {
    parts.push('no base')
  }
  // A collapsed fan-out's "more" node stands for the overlays it hides.
  const count = node.overlays.reduce(
    (sum, id) => sum + (graph.all.get(id)?.kind === 'more' ? graph.all.get(id)!.hiddenCount : 1),
    0,
  )
  parts.push(count === 0 ? 'no overlays' : count === 1 ? '1 overlay' : `${count} overlays`)
  return parts.join(', ')
}

/** Arrow-key moves between nodes. */
export type GraphDirection = 'left' | 'right' | 'up' | 'down'

/**
 * The node an arrow key moves to from `id`: left to the base, right to the middle overlay, up
 * and down to the nearest node of the same column. null when there is none.
 */
export function neighbour(graph: ChainGraph, id: string, direction: GraphDirection): string | null {
  const node = graph.nodes.find((candidate) => candidate.id === id)
  if (!node) return null
  if (direction === 'left') return node.base ?? node.loopBase
  if (direction === 'right') {
    if (node.overlays.length === 0) return null
    return node.overlays[Math.floor((node.overlays.length - 1) / 2)] ?? null
  }
  const column = graph.nodes.filter((candidate) => candidate.level === node.level)
  const above = column.filter((candidate) => candidate.y < node.y)
  const below = column.filter((candidate) => candidate.y > node.y)
  if (direction === 'up') return above.length === 0 ? null : above[above.length - 1]!.id
  return below[0]?.id ?? null
}
