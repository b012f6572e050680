// The serve, qemu-cmd and launch commands' argument handling, run in-process through runCli.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { Library } from '../../../main/engine/library'
import { createOverlay } from '../../../main/engine/ops/create'
import { runCli } from '../../../main/cli/run'
import { tempDir } from '../../helpers/tools'

let folder: { path: string; cleanup: () => Promise<void> }

beforeEach(async () => {
  folder = await tempDir('addcow-serving-cli-')
  await writeFile(join(folder.path, 'base.raw'), Buffer.alloc(1024 * 1024, 1))
  await createOverlay({
    overlay: join(folder.path, 'vm.add-cow'),
    backing: 'base.raw',
    backingFormat: 'raw',
  })
})

afterEach(async () => {
  await folder.cleanup()
})

async function run(argv: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = ''
  let stderr = ''
  const sink = (append: (text: string) => void): Writable =>
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        append(chunk.toString())
        done()
      },
    })
  const code = await runCli(argv, {
    stdout: sink((text) => (stdout += text)),
    stderr: sink((text) => (stderr += text)),
    library: new Library(join(folder.path, 'library.json')),
  })
  return { code, stdout, stderr }
}

describe('serving commands: arguments', () => {
  it('serve refuses contradictory or bad addresses with one clear sentence', async () => {
    const image = join(folder.path, 'vm.add-cow')
    const both = await run(['serve', '--socket', join(folder.path, 's'), '--port', '1', image])
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
      join(folder.path, 'missing.psk'),
      image,
    ])
    expect(psk.stderr).toMatch(/missing\.psk: no such file/)
    const taken = join(folder.path, 'file.txt')
    await writeFile(taken, 'x')
    const notSocket = await run(['serve', '--socket', taken, image])
    expect(notSocket.stderr).toMatch(
      /file\.txt exists and is not a socket; refusing to replace it\./,
    )
  })

  it('qemu-cmd explains its command, passes extra arguments through, and validates options', async () => {
    const image = join(folder.path, 'vm.add-cow')
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
    const missing = await run(['qemu-cmd', join(folder.path, 'nope.add-cow')])
    expect(missing.stderr).toMatch(/nope\.add-cow: no such file/)
  })

  it('launch refuses a bad stop timeout and a missing QEMU before starting anything', async () => {
    const image = join(folder.path, 'vm.add-cow')
    const timeout = await run(['launch', '--stop-timeout', 'soon', image])
    expect(timeout.stderr).toMatch(/--stop-timeout 'soon' is not a number of seconds/)
    const noQemu = await run([
      'launch',
      '--binary',
      join(folder.path, 'no-such-qemu'),
      '--accel',
      'tcg',
      image,
    ])
    expect(noQemu.code).toBe(1)
    expect(noQemu.stderr).toMatch(/Cannot start .*no-such-qemu/)
  })
})
