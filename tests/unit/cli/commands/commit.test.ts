import { readFile, truncate } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { openImage } from '../../../../main/engine/open'
import { expectFailure, pattern, root, run, useFolders } from '../helpers'

// addcow commit (main/cli/commands/commit.ts), run in-process: the blast radius as the dry run
// and --json give it, --ignore-unchecked, and the refusal that names every image it would change.

useFolders()

const CLUSTER = 65536

async function write(path: string, offset: number, value: number): Promise<void> {
  const disk = await openImage(path)
  try {
    await disk.write(offset, Buffer.alloc(CLUSTER, value))
  } finally {
    await disk.close()
  }
}

/** base.raw ← s (the commit), a ← b (reading through a), f (flattened sibling). */
async function scene(): Promise<{ base: string; s: string; a: string; b: string; f: string }> {
  await pattern(join(root, 'base.raw'), 4 * CLUSTER, 1)
  for (const [name, base] of [
    ['s', 'base.raw'],
    ['a', 'base.raw'],
    ['b', 'a.add-cow'],
    ['f', 'base.raw'],
  ] as const) {
    const created = await run(['create', '-b', base, `${name}.add-cow`])
    expect(created.code, created.stderr).toBe(0)
  }
  await write(join(root, 's.add-cow'), 0, 9)
  expect((await run(['stream', 'f.add-cow'])).code).toBe(0)
  return {
    base: join(root, 'base.raw'),
    s: join(root, 's.add-cow'),
    a: join(root, 'a.add-cow'),
    b: join(root, 'b.add-cow'),
    f: join(root, 'f.add-cow'),
  }
}

describe('addcow commit', () => {
  it('--dry-run lists every image whose guest view would change, and writes nothing', async () => {
    const { base, s, a, b, f } = await scene()
    const before = await readFile(base)
    const result = await run(['commit', '--dry-run', 's.add-cow'])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toContain('Dry run: nothing was written.')
    expect(result.stdout).toContain(
      `Committing ${s} into ${base} would change the guest view of 2 other image(s):`,
    )
    expect(result.stdout).toContain(`  ${a}\n`)
    expect(result.stdout).toContain(`  ${b} (through ${a})\n`)
    expect(result.stdout).not.toContain(f)
    expect((await readFile(base)).equals(before)).toBe(true)
  })

  it('--dry-run --json gives scripts the list', async () => {
    const { base, s, a, b } = await scene()
    const result = await run(['commit', '--dry-run', '--json', 's.add-cow'])
    expect(result.code, result.stderr).toBe(0)
    const radius = JSON.parse(result.stdout) as {
      overlay: string
      base: string
      dependents: { path: string; dependsHow: string; through: string[] }[]
      unchecked: unknown[]
    }
    expect(radius.overlay).toBe(s)
    expect(radius.base).toBe(base)
    expect(radius.dependents.map((image) => image.path)).toEqual([a, b])
    expect(radius.dependents[1]).toMatchObject({ dependsHow: 'reads', through: [b, a, base] })
    expect(radius.unchecked).toEqual([])
  })

  it('refuses without --force, naming every image; --json reports the commit', async () => {
    const { base, a, b } = await scene()
    const before = await readFile(base)
    const refused = await run(['commit', 's.add-cow'])
    expectFailure(refused, 1, 'commit', a, `${b} (through ${a})`, '--force')
    expect((await readFile(base)).equals(before)).toBe(true)
    const forced = await run(['commit', '--force', '--json', 's.add-cow'])
    expect(forced.code, forced.stderr).toBe(0)
    const committed = JSON.parse(forced.stdout) as {
      base: string
      clusters: number
      dependents: { path: string }[]
    }
    expect(committed).toMatchObject({ base, clusters: 1 })
    expect(committed.dependents.map((image) => image.path)).toEqual([a, b])
    expect((await readFile(base)).subarray(0, CLUSTER).equals(Buffer.alloc(CLUSTER, 9))).toBe(true)
  })

  it('commits with no --force when only a flattened sibling shares the base', async () => {
    await pattern(join(root, 'base.raw'), 4 * CLUSTER, 1)
    expect((await run(['create', '-b', 'base.raw', 's.add-cow'])).code).toBe(0)
    expect((await run(['create', '-b', 'base.raw', 'f.add-cow'])).code).toBe(0)
    expect((await run(['stream', 'f.add-cow'])).code).toBe(0)
    await write(join(root, 's.add-cow'), 0, 9)
    const result = await run(['commit', 's.add-cow'])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stderr).toBe('')
  })

  it('counts an image that could not be checked unless --ignore-unchecked', async () => {
    await pattern(join(root, 'base.raw'), 4 * CLUSTER, 1)
    expect((await run(['create', '-b', 'base.raw', 's.add-cow'])).code).toBe(0)
    expect((await run(['create', '-b', 'base.raw', 'broken.add-cow'])).code).toBe(0)
    await truncate(join(root, 'broken.add-cow'), 4096)
    await write(join(root, 's.add-cow'), 0, 9)
    const broken = join(root, 'broken.add-cow')

    const dry = await run(['commit', '--dry-run', 's.add-cow'])
    expect(dry.stdout).toContain('would change the guest view of no other image.')
    expect(dry.stdout).toContain(
      'Could not be checked (counted as changed unless --ignore-unchecked):',
    )
    expect(dry.stdout).toContain(`  ${broken}: `)

    expectFailure(await run(['commit', 's.add-cow']), 1, 'commit', broken, '--ignore-unchecked')
    const result = await run(['commit', '--ignore-unchecked', 's.add-cow'])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stderr).toContain(`${broken} could not be checked`)
  })

  it('--rollback takes no --dry-run', async () => {
    expectFailure(
      await run(['commit', '--dry-run', '--rollback', 'x.undo']),
      1,
      'commit',
      '--dry-run',
    )
  })
})
