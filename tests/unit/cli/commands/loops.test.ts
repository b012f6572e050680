import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { addCowDriver } from '../../../../main/engine/formats/add-cow/add-cow-disk'
import { expectFailure, pattern, root, run, useFolders } from '../helpers'

// Loops of stored names on the command line (issue 12 item 3): rebase refuses to make one, in
// both modes; check reports one as corruption (exit 2) with the cycle; info shows it and does
// not follow it. x → y where y is x's flattened child: opening x's chain never sees the loop.

useFolders()

/** base.raw ← x ← y (flattened); returns the paths. */
async function scene(): Promise<{ x: string; y: string }> {
  await pattern(join(root, 'base.raw'), 4 * 65536, 1)
  expect((await run(['create', '-b', 'base.raw', 'x.add-cow'])).code).toBe(0)
  expect((await run(['create', '-b', 'x.add-cow', '-F', 'add-cow', 'y.add-cow'])).code).toBe(0)
  expect((await run(['stream', 'y.add-cow'])).code).toBe(0)
  return { x: join(root, 'x.add-cow'), y: join(root, 'y.add-cow') }
}

/** Close the loop as only a raw name rewrite can now: x names y. */
async function closeLoop(x: string): Promise<void> {
  await addCowDriver.setBacking!(x, { name: 'y.add-cow', format: 'add-cow' })
}

describe('loops', () => {
  it.each([[[]], [['-u']]])(
    'rebase %j refuses the flattened child as the new base, naming the cycle',
    async (mode) => {
      const { x, y } = await scene()
      const before = await readFile(x)
      const result = await run(['rebase', ...mode, '-b', 'y.add-cow', '-F', 'add-cow', 'x.add-cow'])
      expectFailure(result, 1, 'rebase', `${x} → ${y} → ${x}`)
      expect((await readFile(x)).equals(before)).toBe(true)
    },
  )

  it('check reports a loop as corruption (exit 2) with the cycle, on either member', async () => {
    const { x, y } = await scene()
    await closeLoop(x)
    for (const [image, cycle] of [
      ['x.add-cow', `${x} → ${y} → ${x}`],
      ['y.add-cow', `${y} → ${x} → ${y}`],
    ] as const) {
      const result = await run(['check', '--json', image])
      expect(result.code, result.stderr).toBe(2)
      const report = JSON.parse(result.stdout) as {
        corruptions: number
        problems: { code: string; value: string }[]
      }
      expect(report.problems).toContainEqual(
        expect.objectContaining({ code: 'chain-loop', value: cycle }),
      )
      const text = await run(['check', image])
      expect(text.code).toBe(2)
      expect(text.stdout + text.stderr).toContain(cycle)
    }
  })

  it('check names the whole cycle once when no layer of the loop is flattened', async () => {
    await pattern(join(root, 'base.raw'), 4 * 65536, 1)
    expect((await run(['create', '-b', 'base.raw', 'p.add-cow'])).code).toBe(0)
    expect((await run(['create', '-b', 'p.add-cow', '-F', 'add-cow', 'q.add-cow'])).code).toBe(0)
    const [p, q] = [join(root, 'p.add-cow'), join(root, 'q.add-cow')]
    await addCowDriver.setBacking!(p, { name: 'q.add-cow', format: 'add-cow' })
    const result = await run(['check', '--json', 'p.add-cow'])
    expect(result.code, result.stderr).toBe(2)
    const report = JSON.parse(result.stdout) as { problems: { code: string; value: string }[] }
    const loops = report.problems.filter((problem) => problem.code === 'chain-loop')
    expect(loops).toHaveLength(1)
    expect(loops[0]!.value).toBe(`${p} → ${q} → ${p}`)
  })

  it('info shows the loop and does not follow it forever', async () => {
    const { x, y } = await scene()
    await closeLoop(x)
    const text = await run(['info', '--backing-chain', 'x.add-cow'])
    expect(text.code, text.stderr).toBe(0)
    expect(text.stdout).toContain(`warning: the backing chain loops: ${x} → ${y} → ${x}`)
    expect(text.stdout).toContain('NOT FOLLOWED: loop')
    const json = await run(['info', '--json', '--backing-chain', 'y.add-cow'])
    const layers = JSON.parse(json.stdout) as { filename: string; warnings?: string[] }[]
    expect(layers.map((layer) => layer.filename)).toEqual([y, x])
    expect(layers[0]!.warnings).toContainEqual(expect.stringContaining(`${y} → ${x} → ${y}`))
  })

  it('check says nothing of loops where there is none', async () => {
    await scene()
    const result = await run(['check', '--json', 'y.add-cow'])
    expect(result.code, result.stdout).toBe(0)
    expect(result.stdout).not.toContain('chain-loop')
  })
})
