import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { runAddcow } from '../../../helpers/cli'
import { dataDir, root, useFolders } from '../helpers'

// addcow web (main/cli/commands/web.ts), run in-process; the server itself is tested in
// tests/unit/web.

useFolders()

describe('addcow web', () => {
  it('addcow web refuses --host 0.0.0.0 without --allow-remote', async () => {
    await mkdir(join(root, 'renderer'))
    await writeFile(
      join(root, 'renderer', 'index.html'),
      '<!doctype html><title>AddCow Studio</title>',
    )
    const result = await runAddcow(['web', '--host', '0.0.0.0', '--no-open'], {
      dataDir: join(dataDir, 'cli-data'),
      env: { ADDCOW_RENDERER_DIR: join(root, 'renderer') },
    })
    expect(result.code).toBe(1)
    expect(result.stderr).toContain('not a loopback address')
  })
})
