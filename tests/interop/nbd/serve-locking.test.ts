// A served overlay is locked: a second writer (another `addcow serve`, qemu-io on the image
// file, a commit into the base) is refused instead of corrupting the bitmap or the base.
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { addcow } from '../../helpers/cli'
import { requireTools, tempDir, tool, toolStatus } from '../../helpers/tools'
import { startServe, type ServeProcess } from './serve-process'

const ready = requireTools('qemu-img', 'qemu-io')

describe.skipIf(!ready)('serve holds the chain locked', () => {
  let folder: { path: string; cleanup: () => Promise<void> }
  let dataDir: string
  let serve: ServeProcess

  beforeAll(async () => {
    folder = await tempDir()
    dataDir = join(folder.path, 'data')
    await tool('qemu-img', ['create', '-f', 'raw', join(folder.path, 'base.raw'), '8M'])
    const created = await addcow(['create', '-b', 'base.raw', '-F', 'raw', 'ov.add-cow'], {
      cwd: folder.path,
      dataDir,
    })
    expect(created.code, created.stderr).toBe(0)
    serve = await startServe(['--socket', join(folder.path, 'ov.sock'), 'ov.add-cow'], {
      dataDir,
      cwd: folder.path,
    })
  })

  afterAll(async () => {
    await serve?.stop()
    await folder?.cleanup()
  })

  it('refuses a second writable export of the same overlay', async () => {
    const second = await addcow(
      ['serve', '--socket', join(folder.path, 'ov2.sock'), 'ov.add-cow'],
      {
        cwd: folder.path,
        dataDir,
        timeout: 30_000,
      },
    )
    expect(second.code).not.toBe(0)
    expect(second.stderr).toMatch(/in use by another process/)
    expect(second.stderr).toContain('ov.add-cow')
  })

  it('makes qemu-io refuse to write the image file or the base', async () => {
    for (const file of ['ov.raw', 'base.raw']) {
      const result = await toolStatus('qemu-io', [
        '-f',
        'raw',
        '-c',
        'write 0 4k',
        join(folder.path, file),
      ])
      expect(result.stdout + result.stderr).toMatch(/Failed to get .*lock/)
    }
  })

  it('refuses to commit into the base while the overlay is served', async () => {
    const other = await addcow(['create', '-b', 'base.raw', '-F', 'raw', 'other.add-cow'], {
      cwd: folder.path,
      dataDir,
    })
    expect(other.code, other.stderr).toBe(0)
    const commit = await addcow(['commit', '--force', 'other.add-cow'], {
      cwd: folder.path,
      dataDir,
    })
    expect(commit.code).not.toBe(0)
    expect(commit.stderr).toMatch(/in use by another process/)
  })

  it('releases the locks when the export stops', async () => {
    expect(await serve.stop()).toBe(0)
    const write = await toolStatus('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write 0 4k',
      join(folder.path, 'ov.raw'),
    ])
    expect(write.code, write.stderr).toBe(0)
  })
})
