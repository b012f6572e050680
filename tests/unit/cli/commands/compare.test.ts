import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { beforeEach, describe, expect, it } from 'vitest'
import { tempDir } from '../../../helpers/tools'
import { cleanups, expectFailure, pattern, root, run, useFolders } from '../helpers'

// addcow compare (main/cli/commands/compare.ts), run in-process: exit 0 same, 1 different, 2 error.

useFolders()

describe('addcow compare', () => {
  beforeEach(async () => {
    await pattern(join(root, 'a.raw'), 65536, 5)
    await pattern(join(root, 'b.raw'), 65536, 5)
    const longer = Buffer.alloc(131072)
    longer.fill(5, 0, 65536)
    await writeFile(join(root, 'longer.raw'), longer)
    const different = Buffer.alloc(65536, 5)
    different[4097] = 6
    await writeFile(join(root, 'different.raw'), different)
  })

  it('exits 0 when the guest views match, also when the larger one ends in zeros', async () => {
    expect(await run(['compare', 'a.raw', 'b.raw'])).toEqual({
      code: 0,
      stdout: 'Images are identical.\n',
      stderr: '',
    })
    expect(await run(['compare', 'a.raw', 'longer.raw'])).toEqual({
      code: 0,
      stdout: 'Images are identical (the larger one ends in zeros).\n',
      stderr: '',
    })
    expect((await run(['create', '-b', 'a.raw', 'ov.add-cow'])).code).toBe(0)
    expect((await run(['compare', 'ov.add-cow', 'b.raw'])).code).toBe(0)
  })

  it('exits 1 at the first difference', async () => {
    expect(await run(['compare', 'a.raw', 'different.raw'])).toEqual({
      code: 1,
      stdout: 'Content mismatch at offset 4097!\n',
      stderr: '',
    })
    const tail = Buffer.alloc(131072)
    tail.fill(5, 0, 65536)
    tail[100000] = 1
    await writeFile(join(root, 'tail.raw'), tail)
    expect((await run(['compare', 'tail.raw', 'a.raw'])).stdout).toBe(
      'Content mismatch at offset 100000!\n',
    )
  })

  it('-f and -F name the formats', async () => {
    expect((await run(['create', '-b', 'a.raw', 'ov.add-cow'])).code).toBe(0)
    // Read as raw, the add-cow file is its header: not the guest view.
    expect((await run(['compare', '-f', 'raw', 'ov.add-cow', 'a.raw'])).code).toBe(1)
    expect((await run(['compare', '-F', 'add-cow', 'a.raw', 'ov.add-cow'])).code).toBe(0)
    expect((await run(['compare', '-f', 'add-cow', '-F', 'raw', 'ov.add-cow', 'a.raw'])).code).toBe(
      0,
    )
  })

  it('--allow-name / --allow-any-name let it read through names outside the folder', async () => {
    const outside = await tempDir()
    cleanups.push(outside.cleanup)
    await pattern(join(outside.path, 'far.raw'), 65536, 5)
    const otherData = await tempDir('addcow-data-')
    cleanups.push(otherData.cleanup)
    expect((await run(['create', '-b', join(outside.path, 'far.raw'), 'ov.add-cow'])).code).toBe(0)
    const refused = await run(['compare', 'ov.add-cow', 'a.raw'], { dataDir: otherData.path })
    expectFailure(
      refused,
      2,
      'compare',
      'Refusing to open the backing file',
      join(outside.path, 'far.raw'),
    )
    const named = await run(
      ['compare', '--allow-name', join(outside.path, 'far.raw'), 'ov.add-cow', 'a.raw'],
      {
        dataDir: otherData.path,
      },
    )
    expect(named).toEqual({ code: 0, stdout: 'Images are identical.\n', stderr: '' })
    expect(
      (
        await run(['compare', '--allow-any-name', 'ov.add-cow', 'a.raw'], {
          dataDir: otherData.path,
        })
      ).code,
    ).toBe(0)
  })

  it('exits 2 on errors', async () => {
    expectFailure(
      await run(['compare', 'a.raw']),
      2,
      'compare',
      'Expected two images A and B; got 1 argument.',
    )
    expectFailure(await run(['compare', 'a.raw', 'gone.raw']), 2, 'compare', join(root, 'gone.raw'))
    expectFailure(
      await run(['compare', '-q', 'a.raw', 'b.raw']),
      2,
      'compare',
      "Unknown option '-q'",
    )
    expectFailure(
      await run(['compare', '-f', 'add-cow', 'a.raw', 'b.raw']),
      2,
      'compare',
      'is not a add-cow file',
    )
  })
})
