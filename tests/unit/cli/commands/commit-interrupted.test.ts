import { copyFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { setFileObserver } from '../../../../main/engine/file'
import { runAddcow } from '../../../helpers/cli'
import { dataDir, root, run, useFolders } from '../helpers'
import { makeSparseRaw, pattern, writeGuest } from '../../../helpers/images'

// addcow commit cancelled part way (SIGINT, as the CLI's signal): the message says what the
// base holds and how to go on; check and the drift guard accept the overlay; --rollback puts
// the base back and compare agrees.

useFolders()
afterEach(() => void setFileObserver(null))

const MiB = 1024 * 1024

describe('addcow commit, interrupted', () => {
  it('says where it stopped, keeps the overlay trusted, and rolls back', async () => {
    await makeSparseRaw(join(root, 'base.raw'), 64 * MiB, [[0, pattern(64 * MiB, 1)]])
    await copyFile(join(root, 'base.raw'), join(root, 'original.raw'))
    expect((await run(['create', '-b', 'base.raw', '-F', 'raw', 'ov.add-cow'])).code).toBe(0)
    await writeGuest(
      join(root, 'ov.add-cow'),
      [0, 1, 2, 3].map((window) => [window * 16 * MiB, pattern(4 * MiB, 7 + window)]),
    )
    // Cancel as soon as the journal holds the first window's old bytes (before its copy).
    const controller = new AbortController()
    setFileObserver({
      after: (event) => {
        if (event.kind === 'sync' && event.path.endsWith('.undo')) controller.abort()
      },
    })
    const stopped = await runAddcow(['commit', '--undo', 'ov.undo', 'ov.add-cow'], {
      cwd: root,
      dataDir,
      signal: controller.signal,
    })
    setFileObserver(null)
    expect(stopped.code).not.toBe(0)
    expect(stopped.stderr).toContain('was cancelled after 4 MiB of 16 MiB')
    expect(stopped.stderr).toContain("The base now holds the overlay's data at 0 B–4 MiB")
    expect(stopped.stderr).toContain('The overlay still reads the same')
    expect(stopped.stderr).toContain(`--rollback ${join(root, 'ov.undo')}`)
    expect((await run(['compare', 'base.raw', 'original.raw'])).code).toBe(1)

    // info says so too, until the commit is finished or rolled back.
    const during = await run(['info', 'ov.add-cow'])
    expect(during.stdout).toContain('interrupted commit: The commit of')
    expect(during.stdout).toContain('was cancelled after 4 MiB of 16 MiB')

    const check = await run(['check', '--json', 'ov.add-cow'])
    expect(JSON.parse(check.stdout)).toMatchObject({ 'base-fingerprint': 'unchanged' })

    const back = await run(['commit', '--rollback', 'ov.undo'])
    expect(back.code, back.stderr).toBe(0)
    expect(back.stdout).toContain('Commit rolled back: 4 MiB of')
    expect((await run(['compare', 'base.raw', 'original.raw'])).code).toBe(0)
    expect((await run(['info', 'ov.add-cow'])).stdout).not.toContain('interrupted commit')
  })
})
