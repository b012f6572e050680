import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { root, run, useFolders } from '../helpers'

// addcow qemu-cmd (main/cli/commands/qemu-cmd.ts), run in-process.

useFolders({ overlay: true })

describe('addcow qemu-cmd', () => {
  it('qemu-cmd explains its command, passes extra arguments through, and validates options', async () => {
    const image = join(root, 'vm.add-cow')
    const printed = await run([
      'qemu-cmd',
      '--socket',
      '/run/x.sock',
      '--accel',
      'tcg',
      '-m',
      '1G',
      image,
      '--',
      '-snapshot',
    ])
    expect(printed.code, printed.stderr).toBe(0)
    expect(printed.stdout).toContain(`#   addcow serve --socket /run/x.sock ${image}\n`)
    expect(printed.stdout).toContain('  -m 1024 \\\n')
    expect(printed.stdout).toContain('  -snapshot\n')
    expect(printed.stdout).toMatch(/# {3}-snapshot +extra arguments, passed through as given/)
    const bad = await run(['qemu-cmd', '--via', 'usb', image])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toBe("addcow qemu-cmd: --via 'usb' is not one of nbd, native, raw.\n")
    const missing = await run(['qemu-cmd', join(root, 'nope.add-cow')])
    expect(missing.stderr).toMatch(/nope\.add-cow: no such file/)
  })
})
