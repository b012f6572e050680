import { readdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { addcow } from '../../../helpers/cli'
import { tempDir } from '../../../helpers/tools'
import {
  buildQemuCow,
  buildV12,
  buildV3orV7,
  draftImageFile,
  expectedView,
} from '../../../helpers/format-builders'
import { pattern } from '../../../helpers/images'

let dir: string
let dataDir: string
let cleanup: () => Promise<void>

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-old-formats-'))
  dataDir = join(dir, '.data')
})
afterEach(async () => {
  await cleanup()
})

const SIZE = 256 * 1024
const BASE = pattern(SIZE, 31)
const DATA = pattern(SIZE, 32)

async function run(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return addcow(args, { dataDir, cwd: dir })
}

describe('the addcow command line on old formats', () => {
  it('shows a v7 draft, then amend --upgrade turns it into the current layout in place', async () => {
    const allocated = new Set([0, 1, 2, 130, 511])
    await writeFile(join(dir, 'base.raw'), BASE)
    await writeFile(join(dir, 'disk.raw'), draftImageFile(SIZE, 512, allocated, DATA))
    await writeFile(
      join(dir, 'disk.add-cow'),
      buildV3orV7({ layout: 'v7', size: SIZE, backing: 'base.raw', image: 'disk.raw', allocated }),
    )
    await writeFile(join(dir, 'expected.raw'), expectedView(SIZE, 512, allocated, DATA, BASE))

    const info = await run('info', '--json', 'disk.add-cow')
    expect(info.code, info.stderr).toBe(0)
    const parsed = JSON.parse(info.stdout) as {
      format: string
      warnings: string[]
      'allocated-clusters': number
    }
    expect(parsed.format).toBe('add-cow-v7')
    expect(parsed['allocated-clusters']).toBe(5)
    expect(parsed.warnings[0]).toMatch(/earlier add-cow draft layout v7/)
    const map = JSON.parse((await run('map', '--json', 'disk.add-cow')).stdout) as {
      start: number
      depth: number
    }[]
    expect(map[0]).toMatchObject({ start: 0, length: 1536, depth: 0 })
    expect((await run('compare', 'disk.add-cow', 'expected.raw')).code).toBe(0)

    const upgrade = await run('amend', '--upgrade', '--keep-old', 'disk.add-cow')
    expect(upgrade.code, upgrade.stderr).toBe(0)
    expect(upgrade.stdout).toMatch(
      /Upgraded disk.add-cow \(add-cow-v7\) .*cluster_size=65536.*3 partly written clusters completed.*kept as .*disk.add-cow.old/,
    )
    const after = JSON.parse((await run('info', '--json', 'disk.add-cow')).stdout) as {
      format: string
      'allocated-clusters': number
    }
    expect(after).toMatchObject({ format: 'add-cow', 'allocated-clusters': 3 })
    expect((await run('compare', 'disk.add-cow', 'expected.raw')).code).toBe(0)
    expect((await run('compare', 'disk.add-cow.old', 'expected.raw')).code).toBe(0)
    // addcow check finds no corruption (exit 3, leaks only: the fixture's image file holds a
    // loud filler where the draft has no data), and no temporary file is left behind.
    const check = await run('check', 'disk.add-cow')
    expect(check.code, check.stdout + check.stderr).toBe(3)
    expect(check.stdout + check.stderr).not.toMatch(/corrupt/i)
    expect((await readdir(dir)).filter((name) => name.includes('.upgrading'))).toEqual([])
  })

  it('upgrades a V12 draft to a new file and refuses what it cannot do', async () => {
    const allocated = new Set([1, 3])
    await writeFile(join(dir, 'base.raw'), BASE)
    await writeFile(join(dir, 'disk.raw'), draftImageFile(SIZE, 65536, allocated, DATA))
    const draft = buildV12({
      size: SIZE,
      backing: 'base.raw',
      backingFormat: 'raw',
      image: 'disk.raw',
      allocated,
    })
    await writeFile(join(dir, 'disk.add-cow'), draft)
    await writeFile(join(dir, 'expected.raw'), expectedView(SIZE, 65536, allocated, DATA, BASE))

    const missing = await run('amend', 'disk.add-cow')
    expect(missing.code).toBe(1)
    expect(missing.stderr).toMatch(/only --upgrade is supported/)

    const upgrade = await run('amend', '--upgrade', '-o', 'new.add-cow', '-c', '4K', 'disk.add-cow')
    expect(upgrade.code, upgrade.stderr).toBe(0)
    expect((await readFile(join(dir, 'disk.add-cow'))).equals(draft)).toBe(true)
    expect((await run('compare', 'new.add-cow', 'expected.raw')).code).toBe(0)
    expect((await stat(join(dir, 'new.add-cow'))).size).toBe(4096 + 4096)

    const again = await run('amend', '--upgrade', 'new.add-cow')
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/already uses the current add-cow layout/)
    const taken = await run('amend', '--upgrade', '-o', 'new.add-cow', 'disk.add-cow')
    expect(taken.stderr).toMatch(/already exists; refusing to overwrite it/)
  })

  it('reads a QEMU cow file and compares it with its expected content', async () => {
    const allocated = new Set([0, 5, 6, 7, 300])
    await writeFile(join(dir, 'base.raw'), BASE)
    const mtime = Math.floor((await stat(join(dir, 'base.raw'))).mtimeMs / 1000)
    await writeFile(
      join(dir, 'disk.cow'),
      buildQemuCow({ size: SIZE, backing: 'base.raw', mtime, data: DATA, allocated }),
    )
    await writeFile(join(dir, 'expected.raw'), expectedView(SIZE, 512, allocated, DATA, BASE))
    const info = JSON.parse(
      (await run('info', '--json', '--backing-chain', 'disk.cow')).stdout,
    ) as { format: string }[]
    expect(info.map((layer) => layer.format)).toEqual(['cow', 'raw'])
    expect((await run('compare', 'disk.cow', 'expected.raw')).code).toBe(0)
    const amend = await run('amend', '--upgrade', 'disk.cow')
    expect(amend.stderr).toMatch(/is a cow file, not an earlier add-cow draft/)
  })
})
