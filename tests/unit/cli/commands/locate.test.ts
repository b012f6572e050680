import { mkdir, rename } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { expectFailure, pattern, root, run, useFolders } from '../helpers'

// addcow locate (main/cli/commands/locate.ts), run in-process: a moved base is relinked only
// when its size and recorded fingerprint match, relative inside the overlay's folder.

useFolders()

describe('addcow locate', () => {
  it('relinks a moved base and says what it checked; refuses another file', async () => {
    await pattern(join(root, 'base.raw'), 1024 * 1024, 7)
    expect((await run(['create', '-b', 'base.raw', '-F', 'raw', 'ov.add-cow'])).code).toBe(0)
    await mkdir(join(root, 'old'))
    await rename(join(root, 'base.raw'), join(root, 'old', 'base.raw'))
    expectFailure(await run(['compare', 'ov.add-cow', 'old/base.raw']), 2, 'compare', 'base.raw')

    await pattern(join(root, 'other.raw'), 1024 * 1024, 8)
    expectFailure(
      await run(['locate', '-b', 'other.raw', 'ov.add-cow']),
      1,
      'locate',
      'differs from the fingerprint recorded',
    )

    const result = await run(['locate', '-b', 'old/base.raw', 'ov.add-cow'])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toContain(
      "stored as 'old/base.raw' (relative); size and fingerprint match.",
    )
    expect((await run(['compare', 'ov.add-cow', 'old/base.raw'])).code).toBe(0)
    const info = await run(['info', '--json', 'ov.add-cow'])
    expect(JSON.parse(info.stdout)).toMatchObject({ 'backing-filename': 'old/base.raw' })
  })
})
