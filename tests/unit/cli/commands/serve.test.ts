import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { root, run, useFolders } from '../helpers'

// addcow serve's arguments (main/cli/commands/serve.ts), run in-process; serving itself is
// tested in tests/unit/nbd and, as the binary, in tests/unit/cli/bin.test.ts and tests/interop.

useFolders({ overlay: true })

describe('addcow serve: arguments', () => {
  it('serve refuses contradictory or bad addresses with one clear sentence', async () => {
    const image = join(root, 'vm.add-cow')
    const both = await run(['serve', '--socket', join(root, 's'), '--port', '1', image])
    expect(both.code).toBe(1)
    expect(both.stderr).toBe(
      'addcow serve: addcow serve takes either --socket or --host/--port, not both.\n',
    )
    const port = await run(['serve', '--port', '70000', image])
    expect(port.stderr).toMatch(/The port '70000' is not a number between 0 and 65535\./)
    const connections = await run(['serve', '--max-connections', '0', image])
    expect(connections.stderr).toMatch(/--max-connections '0'/)
    const psk = await run([
      'serve',
      '--port',
      '0',
      '--tls-psk-file',
      join(root, 'missing.psk'),
      image,
    ])
    expect(psk.stderr).toMatch(/missing\.psk: no such file/)
    const taken = join(root, 'file.txt')
    await writeFile(taken, 'x')
    const notSocket = await run(['serve', '--socket', taken, image])
    expect(notSocket.stderr).toMatch(
      /file\.txt exists and is not a socket; refusing to replace it\./,
    )
    const copyReadOnly = await run(['serve', '--copy-on-read', '--read-only', image])
    expect(copyReadOnly.stderr).toBe(
      'addcow serve: Copy-on-read writes what it reads into the image; it cannot go with a read-only export.\n',
    )
  })
})
