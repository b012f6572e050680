import { once } from 'node:events'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { requireTools, tempDir, toolStatus } from '../../helpers/tools'
import { startServe } from '../nbd/serve-process'

// `addcow serve` of a file whose format is probed as raw does what QEMU does for a probed raw
// image (issue 16): a warning, and a write that would put another format's header into its
// first sector is refused (EPERM for the NBD client); `-f raw` lifts the guard. qemu-io is the
// client.

const ready = requireTools('qemu-io')

let dir: string
let cleanup: () => Promise<void>

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-probed-'))
})
afterEach(async () => {
  await cleanup()
})

/** A qcow2 magic and version 3: what a guest would write to turn its disk into a qcow2 header. */
const QCOW2_START = Buffer.from([0x51, 0x46, 0x49, 0xfb, 0, 0, 0, 3])

async function serveAndWrite(args: string[]) {
  await writeFile(join(dir, 'disk.img'), Buffer.alloc(1024 * 1024, 0x20))
  await writeFile(join(dir, 'header.bin'), QCOW2_START)
  const serve = await startServe(['--socket', join(dir, 'sock'), ...args, 'disk.img'], {
    dataDir: join(dir, '.data'),
    cwd: dir,
  })
  const write = (command: string) => toolStatus('qemu-io', ['-f', 'raw', '-c', command, serve.uri])
  const header = await write(`write -s ${join(dir, 'header.bin')} 0 8`)
  const plain = await write('write -P 0x41 0 512')
  const later = await write(`write -s ${join(dir, 'header.bin')} 4096 8`)
  const ended = once(serve.child.stderr!, 'end')
  expect(await serve.stop()).toBe(0)
  await ended
  return {
    header,
    plain,
    later,
    stderr: serve.stderr(),
    data: await readFile(join(dir, 'disk.img')),
  }
}

describe.skipIf(!ready)('addcow serve of a probed raw image', () => {
  it('warns, and refuses a write that would make the first sector another format’s header', async () => {
    const { header, plain, later, stderr, data } = await serveAndWrite([])
    expect(stderr).toContain(
      'addcow serve: warning: ' +
        join(dir, 'disk.img') +
        ' has no header of a known format; it is read as raw.',
    )
    expect(stderr).toContain('give the format (-f raw) to allow them')
    expect(header.stdout + header.stderr).toContain('Operation not permitted')
    expect(stderr).toContain('would make it look like a qcow2 image')
    // Writes that leave the first sector harmless, and header bytes elsewhere, go through.
    expect(plain.code, plain.stderr).toBe(0)
    expect(later.code, later.stderr).toBe(0)
    expect(data.subarray(0, 512).every((byte) => byte === 0x41)).toBe(true)
    expect(data.subarray(4096, 4104).equals(QCOW2_START)).toBe(true)
  })

  it('with -f raw, serves it without the guard or the warning', async () => {
    const { header, stderr, data } = await serveAndWrite(['-f', 'raw'])
    expect(header.code, header.stdout + header.stderr).toBe(0)
    expect(header.stdout + header.stderr).not.toContain('not permitted')
    expect(header.stdout).toContain('wrote 8/8 bytes at offset 0')
    expect(stderr).not.toContain('warning')
    // The plain write came after the header write and overwrote it.
    expect(data.subarray(0, 512).every((byte) => byte === 0x41)).toBe(true)
  })
})
