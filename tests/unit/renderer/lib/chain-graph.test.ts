import { describe, expect, it } from 'vitest'
import type { ImageSummary } from '../../../../shared/ipc/contract'
import {
  basesToReveal,
  buildChainGraph,
  FAN_OUT,
  GEOMETRY,
  moreNodeId,
  neighbour,
  nodeBadge,
  nodeLabel,
  searchGraph,
  type ChainGraph,
} from '../../../../renderer/src/lib/chain-graph'
import { summary } from '../helpers/fixtures'

// The chain browser's graph: overlays linked to their bases (shared bases fan out), bases
// outside the library shown as nodes of their own, missing and changed files marked, a tidy
// layout without overlaps, labels for screen readers and arrow-key moves.

function image(path: string, overrides: Partial<ImageSummary> = {}): ImageSummary {
  return summary(path, { diskUsage: 64 * 1024, ...overrides })
}

function on(base: string, status: ImageSummary['base']['status'] = 'ok'): ImageSummary['base'] {
  return {
    status,
    stored: base.split('/').pop() ?? base,
    path: base,
    reason: status === 'missing' ? 'missing' : 'inside-folder',
  }
}

/** golden.img ← a, b (shared); a ← deep; orphan ← (missing) gone.img; stale ← moving.img (changed). */
function library(): ImageSummary[] {
  return [
    image('/vm/golden.img', {
      format: 'raw',
      dependents: ['/vm/a.add-cow', '/vm/b.add-cow'],
      allocatedPercent: null,
    }),
    image('/vm/a.add-cow', { base: on('/vm/golden.img'), dependents: ['/vm/deep.add-cow'] }),
    image('/vm/b.add-cow', { base: on('/vm/golden.img') }),
    image('/vm/deep.add-cow', { base: on('/vm/a.add-cow') }),
    image('/x/orphan.add-cow', { base: on('/x/gone.img', 'missing') }),
    image('/y/stale.add-cow', { base: on('/y/moving.img', 'changed') }),
    image('/z/broken.add-cow', {
      format: null,
      virtualSize: null,
      error: { code: 'BAD_MAGIC', message: '/z/broken.add-cow is not an add-cow file.' },
    }),
  ]
}

function node(graph: ChainGraph, id: string) {
  const found = graph.nodes.find((candidate) => candidate.id === id)
  if (!found) throw new Error(`no node ${id}`)
  return found
}

describe('buildChainGraph', () => {
  it('links overlays to their bases, and fans a shared base out', () => {
    const graph = buildChainGraph(library())
    expect(node(graph, '/vm/golden.img').overlays).toEqual(['/vm/a.add-cow', '/vm/b.add-cow'])
    expect(node(graph, '/vm/a.add-cow')).toMatchObject({
      base: '/vm/golden.img',
      link: 'ok',
      level: 1,
    })
    expect(node(graph, '/vm/deep.add-cow')).toMatchObject({ base: '/vm/a.add-cow', level: 2 })
    expect(graph.edges.map((edge) => [edge.overlay, edge.base, edge.status]).sort()).toEqual(
      [
        ['/vm/a.add-cow', '/vm/golden.img', 'ok'],
        ['/vm/b.add-cow', '/vm/golden.img', 'ok'],
        ['/vm/deep.add-cow', '/vm/a.add-cow', 'ok'],
        ['/x/orphan.add-cow', '/x/gone.img', 'missing'],
        ['/y/stale.add-cow', '/y/moving.img', 'changed'],
      ].sort(),
    )
  })

  it('shows a base outside the library as its own node, marked missing when it is gone', () => {
    const graph = buildChainGraph(library())
    expect(node(graph, '/x/gone.img')).toMatchObject({ kind: 'outside', missing: true })
    expect(node(graph, '/y/moving.img')).toMatchObject({ kind: 'outside', missing: false })
    expect(nodeBadge(node(graph, '/x/gone.img'))).toEqual({ text: 'Missing', tone: 'error' })
    expect(nodeBadge(node(graph, '/x/orphan.add-cow'))).toEqual({
      text: 'Base missing',
      tone: 'error',
    })
    expect(nodeBadge(node(graph, '/y/stale.add-cow'))).toEqual({
      text: 'Base changed',
      tone: 'error',
    })
    expect(nodeBadge(node(graph, '/z/broken.add-cow'))).toEqual({
      text: 'Unreadable',
      tone: 'error',
    })
    expect(nodeBadge(node(graph, '/vm/b.add-cow'))).toBeNull()
  })

  it('lays the forest out without overlaps, a base centred on its overlays', () => {
    const graph = buildChainGraph(library())
    const { nodeWidth, nodeHeight } = GEOMETRY
    for (const [index, first] of graph.nodes.entries()) {
      for (const second of graph.nodes.slice(index + 1)) {
        const apart =
          first.x + nodeWidth <= second.x ||
          second.x + nodeWidth <= first.x ||
          first.y + nodeHeight <= second.y ||
          second.y + nodeHeight <= first.y
        expect(apart, `${first.id} overlaps ${second.id}`).toBe(true)
      }
      expect(first.x + nodeWidth).toBeLessThanOrEqual(graph.width)
      expect(first.y + nodeHeight).toBeLessThanOrEqual(graph.height)
    }
    const golden = node(graph, '/vm/golden.img')
    const a = node(graph, '/vm/a.add-cow')
    const b = node(graph, '/vm/b.add-cow')
    expect(golden.y).toBe((a.y + b.y) / 2)
    expect(a.x).toBeGreaterThan(golden.x)
    // Edges run from the base's right side to the overlay's left side.
    const edge = graph.edges.find((candidate) => candidate.overlay === '/vm/b.add-cow')!
    expect(edge.path.startsWith(`M ${golden.x + nodeWidth} ${golden.y + nodeHeight / 2}`)).toBe(
      true,
    )
    expect(edge.path.endsWith(`${b.x} ${b.y + nodeHeight / 2}`)).toBe(true)
  })

  it('matches a refused base by its path when the library holds it', () => {
    const graph = buildChainGraph([
      image('/a/base.img', { format: 'raw' }),
      image('/b/stranger.add-cow', {
        base: {
          status: 'refused',
          stored: '/a/base.img',
          path: '/a/base.img',
          reason: 'outside-folder',
        },
      }),
    ])
    expect(graph.nodes).toHaveLength(2)
    expect(graph.edges).toEqual([
      expect.objectContaining({
        overlay: '/b/stranger.add-cow',
        base: '/a/base.img',
        status: 'refused',
      }),
    ])
  })

  it('survives two images naming each other', () => {
    const graph = buildChainGraph([
      image('/l/one.add-cow', { base: on('/l/two.add-cow', 'refused') }),
      image('/l/two.add-cow', { base: on('/l/one.add-cow', 'refused') }),
    ])
    expect(graph.nodes).toHaveLength(2)
    expect(graph.nodes.filter((candidate) => candidate.base === null)).toHaveLength(1)
    expect(graph.height).toBeGreaterThan(0)
  })

  it('draws a loop of base names in red, every member marked, none shown as a root', () => {
    // x names y, y (flattened) names x: the library summary says both are in the loop.
    const graph = buildChainGraph([
      image('/l/base.raw', { format: 'raw' }),
      image('/l/x.add-cow', {
        base: on('/l/y.add-cow'),
        dependents: ['/l/y.add-cow'],
        loop: ['/l/x.add-cow', '/l/y.add-cow'],
      }),
      image('/l/y.add-cow', {
        base: on('/l/x.add-cow'),
        dependents: ['/l/x.add-cow'],
        loop: ['/l/y.add-cow', '/l/x.add-cow'],
      }),
    ])
    const x = node(graph, '/l/x.add-cow')
    const y = node(graph, '/l/y.add-cow')
    for (const member of [x, y]) {
      expect(nodeBadge(member)).toEqual({ text: 'Loop', tone: 'error' })
      expect(nodeLabel(graph, member)).toContain('in a loop of base names')
      expect(nodeLabel(graph, member)).not.toContain('no base')
    }
    expect(nodeLabel(graph, x)).toContain('x.add-cow → y.add-cow → x.add-cow')
    // Both links of the loop are drawn, as loop links (the closing one bends below the nodes).
    const loopEdges = graph.edges.filter((edge) => edge.status === 'loop')
    expect(loopEdges.map((edge) => `${edge.overlay}→${edge.base}`).sort()).toEqual([
      '/l/x.add-cow→/l/y.add-cow',
      '/l/y.add-cow→/l/x.add-cow',
    ])
    const first = [x, y].find((member) => member.base === null)!
    expect(first.loopBase).not.toBeNull()
    expect(neighbour(graph, first.id, 'left')).toBe(first.loopBase)
    // The plain base beside them is still a plain root.
    expect(nodeBadge(node(graph, '/l/base.raw'))).toBeNull()
    expect(nodeLabel(graph, node(graph, '/l/base.raw'))).toContain('no base')
  })

  it('is empty for an empty library', () => {
    expect(buildChainGraph([])).toEqual({
      nodes: [],
      edges: [],
      width: 0,
      height: 0,
      all: new Map(),
    })
  })
})

describe('labels and keys', () => {
  it('says what each node is, its base and its overlays', () => {
    const graph = buildChainGraph(library())
    expect(nodeLabel(graph, node(graph, '/vm/golden.img'))).toBe(
      'golden.img, raw · 16 MiB, no base, 2 overlays',
    )
    expect(nodeLabel(graph, node(graph, '/vm/a.add-cow'))).toBe(
      'a.add-cow, add-cow · 16 MiB, overlay on golden.img, base matches its fingerprint, 1 overlay',
    )
    expect(nodeLabel(graph, node(graph, '/x/gone.img'))).toBe(
      'gone.img, file not found, Missing, 1 overlay',
    )
    expect(nodeLabel(graph, node(graph, '/y/stale.add-cow'))).toContain(
      'base changed since the overlay was made',
    )
    expect(nodeLabel(graph, node(graph, '/z/broken.add-cow'))).toContain(
      '/z/broken.add-cow is not an add-cow file.',
    )
  })

  it('moves left to the base, right to an overlay, up and down in the column', () => {
    const graph = buildChainGraph(library())
    expect(neighbour(graph, '/vm/a.add-cow', 'left')).toBe('/vm/golden.img')
    expect(neighbour(graph, '/vm/golden.img', 'right')).toBe('/vm/a.add-cow')
    expect(neighbour(graph, '/vm/a.add-cow', 'down')).toBe('/vm/b.add-cow')
    expect(neighbour(graph, '/vm/b.add-cow', 'up')).toBe('/vm/a.add-cow')
    expect(neighbour(graph, '/vm/golden.img', 'left')).toBeNull()
    expect(neighbour(graph, '/vm/b.add-cow', 'right')).toBeNull()
    expect(neighbour(graph, '/nowhere', 'up')).toBeNull()
  })
})

/** /lab/base.raw with `count` overlays vm-0 … vm-(count-1); vm-5 has a child, child.add-cow. */
function fanOut(count: number): ImageSummary[] {
  const overlays = Array.from({ length: count }, (_, index) => `/lab/vm-${index}.add-cow`)
  return [
    image('/lab/base.raw', { format: 'raw', dependents: overlays, allocatedPercent: null }),
    ...overlays.map((path) =>
      image(path, {
        base: on('/lab/base.raw'),
        dependents: path === '/lab/vm-5.add-cow' ? ['/lab/child.add-cow'] : [],
      }),
    ),
    image('/lab/child.add-cow', { base: on('/lab/vm-5.add-cow') }),
  ]
}

describe('large fan-outs', () => {
  it('draws the first overlays of a large fan-out and one node for the rest', () => {
    const graph = buildChainGraph(fanOut(100))
    const more = node(graph, moreNodeId('/lab/base.raw'))
    expect(more).toMatchObject({ kind: 'more', hiddenCount: 97, name: '+97 more overlays' })
    expect(node(graph, '/lab/base.raw').overlays).toEqual([
      '/lab/vm-0.add-cow',
      '/lab/vm-1.add-cow',
      '/lab/vm-2.add-cow',
      more.id,
    ])
    // The hidden overlays and what stands on them are not drawn, but known.
    expect(graph.nodes).toHaveLength(5)
    expect(graph.edges).toHaveLength(4)
    expect(graph.all.get('/lab/child.add-cow')?.base).toBe('/lab/vm-5.add-cow')
    expect(nodeLabel(graph, node(graph, '/lab/base.raw'))).toContain('100 overlays')
    expect(nodeLabel(graph, more)).toBe(
      '+97 more overlays, Show them all: the overlays on base.raw not drawn; press Enter',
    )
  })

  it('keeps a fan-out at the limit whole, and draws an expanded one whole', () => {
    expect(buildChainGraph(fanOut(FAN_OUT.limit)).nodes).toHaveLength(FAN_OUT.limit + 2)
    const expanded = buildChainGraph(fanOut(100), GEOMETRY, {
      ...FAN_OUT,
      expanded: new Set(['/lab/base.raw']),
    })
    expect(expanded.nodes).toHaveLength(102)
    expect(expanded.nodes.some((candidate) => candidate.kind === 'more')).toBe(false)
  })

  it('finds hidden images by name and says which fan-outs to expand to draw them', () => {
    const graph = buildChainGraph(fanOut(100))
    expect(searchGraph(graph, 'VM-5').map((found) => found.id)).toEqual([
      '/lab/vm-5.add-cow',
      '/lab/vm-50.add-cow',
      '/lab/vm-51.add-cow',
      '/lab/vm-52.add-cow',
      '/lab/vm-53.add-cow',
      '/lab/vm-54.add-cow',
      '/lab/vm-55.add-cow',
      '/lab/vm-56.add-cow',
      '/lab/vm-57.add-cow',
      '/lab/vm-58.add-cow',
      '/lab/vm-59.add-cow',
    ])
    expect(searchGraph(graph, 'more')).toEqual([])
    expect(searchGraph(graph, '  ')).toEqual([])
    expect(basesToReveal(graph, '/lab/child.add-cow')).toEqual(['/lab/base.raw'])
    expect(basesToReveal(graph, '/lab/vm-1.add-cow')).toEqual([])
    const revealed = buildChainGraph(fanOut(100), GEOMETRY, {
      ...FAN_OUT,
      expanded: new Set(basesToReveal(graph, '/lab/child.add-cow')),
    })
    expect(node(revealed, '/lab/child.add-cow').base).toBe('/lab/vm-5.add-cow')
  })
})
