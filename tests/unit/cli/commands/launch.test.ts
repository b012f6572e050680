import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { root, run, useFolders } from '../helpers'

// addcow launch's arguments (main/cli/commands/launch.ts), run in-process; booting is tested in
// tests/interop/qemu.

useFolders({ overlay: true })

describe('addcow launch: arguments', () => {
  it('launch refuses a bad stop timeout and a missing QEMU before starting anything', async () => {
    const image = join(root, 'vm.add-cow')
    const timeout = await run(['launch', '--stop-timeout', 'soon', image])
    expect(timeout.stderr).toMatch(/--stop-timeout 'soon' is not a number of seconds/)
    const noQemu = await run([
      'launch',
      '--binary',
      join(root, 'no-such-qemu'),
      '--accel',
      'tcg',
      image,
    ])
    expect(noQemu.code).toBe(1)
    expect(noQemu.stderr).toMatch(/Cannot start .*no-such-qemu/)
  })
})
