import { mkdir, symlink, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isEngineError } from '../../../../main/engine/errors'
import { addCowDriver } from '../../../../main/engine/formats/add-cow/add-cow-disk'
import { buildGraph, cycleThrough, dependentsOf, loopBelow } from '../../../../main/engine/graph'
import type { Library } from '../../../../main/engine/library'
import { commitBlastRadius, planCommit } from '../../../../main/engine/ops/blast-radius'
import { commitOverlay, rollbackCommit } from '../../../../main/engine/ops/commit'
import { streamOverlay } from '../../../../main/engine/ops/stream'
import {
  guestView,
  libraryIn,
  makeOverlay,
  makeRaw,
  pattern,
  writeGuest,
} from '../../../helpers/images'
import { tempDir } from '../../../helpers/tools'

// The dependency graph (main/engine/graph): who reads through whom, built from the library and
// the images' folders; and the commit's blast radius built on it.

const SIZE = 256 * 1024
const CLUSTER = 4096
let dir: string
let cleanup: () => Promise<void>
let library: Library

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-graph-'))
  library = libraryIn(dir)
})
afterEach(async () => {
  await cleanup()
})

async function overlay(name: string, backing: string, folder = dir): Promise<string> {
  return makeOverlay(library, {
    overlay: join(folder, name),
    backing,
    backingFormat: backing.endsWith('.raw') ? 'raw' : 'add-cow',
    clusterSize: CLUSTER,
  })
}

/** base.raw ← s, a; a ← b ← c; base.raw ← f (flattened) ← g. */
async function forest(): Promise<{
  base: string
  s: string
  a: string
  b: string
  c: string
  f: string
  g: string
}> {
  const base = join(dir, 'base.raw')
  await makeRaw(base, SIZE, 1)
  const s = await overlay('s.add-cow', 'base.raw')
  const a = await overlay('a.add-cow', 'base.raw')
  const b = await overlay('b.add-cow', 'a.add-cow')
  const c = await overlay('c.add-cow', 'b.add-cow')
  const f = await overlay('f.add-cow', 'base.raw')
  await writeGuest(s, [[0, pattern(CLUSTER, 7)]])
  await writeGuest(a, [[CLUSTER * 8, pattern(CLUSTER, 8)]])
  await streamOverlay({ overlay: f, library })
  const g = await overlay('g.add-cow', 'f.add-cow')
  return { base, s, a, b, c, f, g }
}

const paths = (nodes: { path: string }[]): string[] => nodes.map((node) => node.path).sort()

describe('buildGraph', () => {
  it('links every image to the base its stored name leads to, and says how it reads it', async () => {
    const { base, s, a, b, f, g } = await forest()
    const graph = await buildGraph({ library })
    expect(graph.nodes.get(base)).toMatchObject({ format: 'raw', parent: null, edge: null })
    expect(graph.nodes.get(s)).toMatchObject({
      format: 'add-cow',
      backingName: 'base.raw',
      parent: base,
      edge: 'reads',
      fullyAllocated: false,
      inLibrary: true,
    })
    expect(graph.nodes.get(b)).toMatchObject({ parent: a, edge: 'reads' })
    expect(graph.nodes.get(f)).toMatchObject({
      parent: base,
      edge: 'not-read',
      fullyAllocated: true,
    })
    expect(graph.nodes.get(g)).toMatchObject({ parent: f, edge: 'reads' })
    expect(graph.nodes.get(s)?.fingerprint?.base).toBe(base)
    expect(graph.loops).toEqual([])
  })

  it('counts an image with every cluster written as not reading its base', async () => {
    const base = join(dir, 'base.raw')
    await makeRaw(base, SIZE, 1)
    const full = await overlay('full.add-cow', 'base.raw')
    await writeGuest(full, [[0, pattern(SIZE, 3)]])
    const graph = await buildGraph({ library })
    expect(graph.nodes.get(full)).toMatchObject({ edge: 'not-read', fullyAllocated: true })
  })

  it('finds images in the folders of library images and of the question, and follows bases elsewhere', async () => {
    await mkdir(join(dir, 'bases'))
    await mkdir(join(dir, 'vms'))
    const base = join(dir, 'bases', 'base.raw')
    await makeRaw(base, SIZE, 1)
    const listed = await overlay('listed.add-cow', base, join(dir, 'vms'))
    const unlisted = await overlay('unlisted.add-cow', base, join(dir, 'vms'))
    await library.removeImages([unlisted, listed])
    // Neither is in the library: the question names the folder.
    const graph = await buildGraph({ library, extra: [join(dir, 'vms')] })
    expect(graph.nodes.get(unlisted)).toMatchObject({ parent: base, inLibrary: false })
    // The base lies in a folder nobody named: it is reached by following the stored name.
    expect(graph.nodes.has(base)).toBe(true)
    expect(paths(dependentsOf(graph, base))).toEqual([listed, unlisted].sort())
  })

  it('never throws on hostile files: each becomes a node that says why it could not be read', async () => {
    const base = join(dir, 'base.raw')
    await makeRaw(base, SIZE, 1)
    const short = await overlay('short.add-cow', 'base.raw')
    await truncate(short, 4096)
    const noImage = await overlay('no-image.add-cow', 'base.raw')
    await writeFile(join(dir, 'no-image.raw'), '')
    await truncate(join(dir, 'no-image.raw'), 0)
    const { rm } = await import('node:fs/promises')
    await rm(join(dir, 'no-image.raw'))
    // An add-cow magic with nonsense after it: not even the backing name can be read.
    const garbage = join(dir, 'garbage.add-cow')
    await writeFile(garbage, Buffer.concat([Buffer.from('ACOW'), Buffer.alloc(100, 0xff)]))
    const vmdk = join(dir, 'disk.vmdk')
    await writeFile(vmdk, Buffer.concat([Buffer.from('KDMV'), Buffer.alloc(508)]))
    const json = await overlay('json.add-cow', 'base.raw')
    await addCowDriver.setBacking!(json, { name: 'json:{"file":"/etc/shadow"}', format: 'raw' })
    await mkdir(join(dir, 'a-folder'))
    await symlink(join(dir, 'nowhere'), join(dir, 'dangling'))
    await symlink(join(dir, 'round'), join(dir, 'round'))
    const graph = await buildGraph({ library })

    expect(graph.nodes.get(short)).toMatchObject({
      state: 'unparseable',
      parent: base,
      backingName: 'base.raw',
      edge: 'unknown',
    })
    expect(graph.nodes.get(short)?.problem).toContain(short)
    expect(graph.nodes.get(noImage)).toMatchObject({
      state: 'unreadable',
      parent: base,
      edge: 'unknown',
    })
    expect(graph.nodes.get(garbage)).toMatchObject({
      state: 'unparseable',
      parent: null,
      parentProblem: 'unparseable',
      edge: 'unknown',
    })
    expect(graph.nodes.get(vmdk)).toMatchObject({ state: 'unparseable', edge: 'unknown' })
    expect(graph.nodes.get(vmdk)?.problem).toContain('vmdk')
    expect(graph.nodes.get(json)).toMatchObject({
      state: 'ok',
      parent: null,
      parentProblem: 'refused-name',
      nameVerdict: 'json',
      edge: 'unknown',
    })
    expect(graph.nodes.has(join(dir, 'a-folder'))).toBe(false)
    expect(graph.nodes.has(join(dir, 'dangling'))).toBe(false)
    expect(graph.nodes.has(join(dir, 'round'))).toBe(false)

    // Unknowns are always listed by name, never dropped.
    const dependents = dependentsOf(graph, base)
    expect(
      dependents
        .filter((node) => node.dependsHow === 'unknown')
        .map((node) => node.path)
        .sort(),
    ).toEqual([garbage, json, noImage, short, vmdk].sort())
  })

  it('finds a loop of stored names even through a flattened layer', async () => {
    const base = join(dir, 'base.raw')
    await makeRaw(base, SIZE, 1)
    const x = await overlay('x.add-cow', 'base.raw')
    const y = await overlay('y.add-cow', 'x.add-cow')
    await streamOverlay({ overlay: y, library })
    // Only a name rewrite (as an old rebase -u did) can close the loop: x → y → x.
    await addCowDriver.setBacking!(x, { name: 'y.add-cow', format: 'add-cow' })
    const graph = await buildGraph({ library })
    expect(graph.loops).toHaveLength(1)
    expect([...graph.loops[0]!].sort()).toEqual([x, y].sort())
    expect(graph.nodes.get(x)?.loop).toEqual([x, y])
    expect(graph.nodes.get(y)?.loop).toEqual([y, x])
    expect(loopBelow(graph, x)).toEqual([x, y])
    // The walk ends although the names loop.
    expect(paths(dependentsOf(graph, x))).toEqual([])
  })

  it('finds the same loop from headers alone (namesOnly), where no edge claims to know reads', async () => {
    const base = join(dir, 'base.raw')
    await makeRaw(base, SIZE, 1)
    const x = await overlay('x.add-cow', 'base.raw')
    const y = await overlay('y.add-cow', 'x.add-cow')
    await streamOverlay({ overlay: y, library })
    await addCowDriver.setBacking!(x, { name: 'y.add-cow', format: 'add-cow' })
    const graph = await buildGraph({ library: null, extra: [x], chainsOnly: true, namesOnly: true })
    expect(loopBelow(graph, x)).toEqual([x, y])
    expect(graph.nodes.get(y)).toMatchObject({ parent: x, fullyAllocated: null, edge: 'unknown' })
    // Only the chain below x was inspected: no folder was listed.
    expect(graph.searched).toEqual([])
    expect(graph.nodes.has(base)).toBe(false)
  })

  it('names the cycle a new base would close', async () => {
    const base = join(dir, 'base.raw')
    await makeRaw(base, SIZE, 1)
    const x = await overlay('x.add-cow', 'base.raw')
    const y = await overlay('y.add-cow', 'x.add-cow')
    const z = await overlay('z.add-cow', 'y.add-cow')
    await streamOverlay({ overlay: y, library })
    const graph = await buildGraph({ library })
    expect(cycleThrough(graph, x, z)).toEqual([x, z, y, x])
    expect(cycleThrough(graph, z, base)).toBeNull()
  })
})

describe('dependentsOf and the commit blast radius', () => {
  it('lists everything that reads through the base, transitively, and stops at flattened layers', async () => {
    const { base, s, a, b, c, f, g } = await forest()
    const graph = await buildGraph({ library })
    const dependents = dependentsOf(graph, base)
    expect(paths(dependents)).toEqual([a, b, c, s].sort())
    expect(dependents.find((node) => node.path === c)?.through).toEqual([c, b, a, base])
    expect(dependents.every((node) => node.dependsHow === 'reads')).toBe(true)
    expect(paths(dependentsOf(graph, f))).toEqual([g])

    const radius = await commitBlastRadius({ overlay: s, base, library })
    expect(paths(radius.dependents)).toEqual([a, b, c].sort())
    expect(radius.unchecked).toEqual([])
    expect(radius.dependents.map((node) => node.path)).not.toContain(f)
    expect(radius.dependents.map((node) => node.path)).not.toContain(g)
  })

  it('counts what stands on an image that could not be read as unknown, with the reason', async () => {
    const { base, s, a, b, c } = await forest()
    await truncate(a, 4096)
    const radius = await commitBlastRadius({ overlay: s, base, library })
    expect(radius.dependents).toEqual([])
    expect(paths(radius.unchecked)).toEqual([a, b, c].sort())
    expect(radius.unchecked.find((node) => node.path === a)?.problem).toContain('too short')
    expect(radius.unchecked.find((node) => node.path === c)?.problem).toContain(b)
  })

  it('leaves out the committing overlay and what stands on it (their view does not change)', async () => {
    const { base, s } = await forest()
    const child = await overlay('s-child.add-cow', 's.add-cow')
    const radius = await commitBlastRadius({ overlay: s, base, library })
    expect(paths(radius.dependents)).not.toContain(child)
    expect(paths(radius.dependents)).not.toContain(s)
  })

  it('plans the commit of a flattened overlay too (its base is not opened)', async () => {
    const { base, f, a, b, c, s } = await forest()
    const radius = await planCommit({ overlay: f, library })
    expect(radius.base).toBe(base)
    expect(paths(radius.dependents)).toEqual([a, b, c, s].sort())
  })

  it('commits without --force when only a flattened sibling shares the base, and its view is unchanged', async () => {
    const base = join(dir, 'base.raw')
    await makeRaw(base, SIZE, 1)
    const s = await overlay('s.add-cow', 'base.raw')
    const f = await overlay('f.add-cow', 'base.raw')
    await streamOverlay({ overlay: f, library })
    await writeGuest(s, [[0, pattern(CLUSTER, 9)]])
    const before = await guestView(f)
    const result = await commitOverlay({ overlay: s, library })
    expect(result.dependents).toEqual([])
    expect((await guestView(f)).equals(before)).toBe(true)
  })

  it('refuses a commit that changes images reading through another overlay, naming them', async () => {
    const { s, b, c } = await forest()
    const error = await commitOverlay({ overlay: s, library }).catch((caught: unknown) => caught)
    expect(isEngineError(error, 'CONFIRMATION_REQUIRED')).toBe(true)
    expect((error as Error).message).toContain(`${c} (through ${b})`)
  })

  it('treats images that could not be checked as affected unless the user vouches for them', async () => {
    const base = join(dir, 'base.raw')
    await makeRaw(base, SIZE, 1)
    const s = await overlay('s.add-cow', 'base.raw')
    const broken = await overlay('broken.add-cow', 'base.raw')
    await truncate(broken, 4096)
    await writeGuest(s, [[0, pattern(CLUSTER, 9)]])
    const error = await commitOverlay({ overlay: s, library, undo: join(dir, 'j.undo') }).catch(
      (caught: unknown) => caught,
    )
    expect(isEngineError(error, 'CONFIRMATION_REQUIRED')).toBe(true)
    expect((error as Error).message).toContain(`could not be checked: ${broken}`)
    expect((error as Error).message).toContain('--ignore-unchecked')
    const result = await commitOverlay({
      overlay: s,
      library,
      ignoreUnchecked: true,
      undo: join(dir, 'j.undo'),
    })
    expect(result.unchecked.map((node) => node.path)).toEqual([broken])

    // The rollback rewrites the same base: the same list, the same choice.
    const refused = await rollbackCommit({ journal: join(dir, 'j.undo'), library }).catch(
      (caught: unknown) => caught,
    )
    expect(isEngineError(refused, 'CONFIRMATION_REQUIRED')).toBe(true)
    expect((refused as Error).message).toContain('Rolling back the commit of')
    const rolled = await rollbackCommit({
      journal: join(dir, 'j.undo'),
      library,
      ignoreUnchecked: true,
    })
    expect(rolled.restoredBytes).toBeGreaterThan(0)
  })
})

describe('nodeKey', () => {
  it('answers for any spelling of a path: relative, through a symbolic link', async () => {
    const { base, a, s } = await forest()
    await symlink(base, join(dir, 'link-to-base.raw'))
    const graph = await buildGraph({ library })
    const viaLink = dependentsOf(graph, join(dir, 'link-to-base.raw'))
    expect(viaLink.map((node) => node.path)).toContain(a)
    expect(viaLink.map((node) => node.path)).toContain(s)
    expect(dependentsOf(graph, join(dir, '.', 'base.raw')).length).toBe(viaLink.length)
  })
})
