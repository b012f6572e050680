// `addcow serve` judged by the real NBD clients: nbdinfo, qemu-io, qemu-img, nbdcopy.
import { copyFile, mkdir, readFile, truncate, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openImage } from '../../../main/engine/open'
import { createOverlay } from '../../../main/engine/ops/create'
import { addcow } from '../../helpers/cli'
import { requireTools, tempDir, tool, toolStatus } from '../../helpers/tools'
import { startServe, type ServeProcess } from './serve-process'

const MIB = 1024 * 1024
const available = requireTools('qemu-img', 'qemu-io', 'nbdinfo', 'nbdcopy')
const describeTools = available ? describe : describe.skip

let folder: { path: string; cleanup: () => Promise<void> }
let dataDir: string

/** A 16 MiB overlay on an 8 MiB base with a byte pattern, and a raw reference of its guest view. */
async function makeOverlay(name: string): Promise<{ overlay: string; reference: string }> {
  const dir = join(folder.path, name)
  await mkdir(dir)
  const base = join(dir, 'base.raw')
  await tool('qemu-img', ['create', '-q', '-f', 'raw', base, '8M'])
  await tool('qemu-io', [
    '-f',
    'raw',
    '-c',
    'write -P 0x11 0 3M',
    '-c',
    'write -P 0x22 3M 3M',
    '-c',
    'write -P 0x33 6M 2M',
    base,
  ])
  const overlay = join(dir, 'overlay.add-cow')
  const created = await addcow(['create', '-b', 'base.raw', '-F', 'raw', '-s', '16M', overlay], {
    dataDir,
    cwd: dir,
  })
  expect(created.code, created.stderr).toBe(0)
  const reference = join(dir, 'reference.raw')
  await copyFile(base, reference)
  await truncate(reference, 16 * MIB)
  return { overlay, reference }
}

function qemuIo(
  target: string,
  commands: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  return toolStatus('qemu-io', [
    '-f',
    'raw',
    ...commands.flatMap((command) => ['-c', command]),
    target,
  ])
}

async function qemuIoOk(target: string, commands: string[]): Promise<void> {
  const result = await qemuIo(target, commands)
  expect(result.code, result.stderr + result.stdout).toBe(0)
  expect(result.stdout + result.stderr).not.toMatch(/Pattern verification failed|error|failed/i)
}

beforeAll(async () => {
  folder = await tempDir('addcow-nbd-interop-')
  dataDir = join(folder.path, 'data')
})

afterAll(async () => {
  await folder?.cleanup()
})

describeTools('addcow serve against the NBD tools', () => {
  let served: ServeProcess
  let image: { overlay: string; reference: string }

  beforeAll(async () => {
    image = await makeOverlay('main')
    served = await startServe(['--socket', join(folder.path, 'main.sock'), image.overlay], {
      dataDir,
    })
  })

  afterAll(async () => {
    expect(await served.stop()).toBe(0)
  })

  it('prints a URI that nbdinfo --json describes: size, flags, contexts and block sizes', async () => {
    expect(served.uri).toBe(`nbd+unix:///?socket=${join(folder.path, 'main.sock')}`)
    const info = JSON.parse(await tool('nbdinfo', ['--json', served.uri])) as {
      protocol: string
      structured: boolean
      exports: Record<string, unknown>[]
    }
    expect(info.protocol).toBe('newstyle-fixed')
    expect(info.structured).toBe(true)
    expect(info.exports[0]).toMatchObject({
      'export-name': '',
      'export-size': 16 * MIB,
      contexts: ['base:allocation'],
      is_read_only: false,
      can_df: true,
      can_fast_zero: true,
      can_flush: true,
      can_fua: true,
      can_multi_conn: true,
      can_trim: true,
      can_zero: true,
      block_size_minimum: 1,
      block_size_preferred: 64 * 1024,
      block_size_maximum: 32 * MIB,
    })
  })

  it('writes and reads qemu-io patterns through the export', async () => {
    const commands = [
      'write -P 0xaa 1M 256K',
      'write -P 0xbb 7M 2M',
      'write -z 2M 64K',
      'write -P 0xcc 12M 100K',
    ]
    await qemuIoOk(served.uri, commands)
    await qemuIoOk(image.reference, commands)
    await qemuIoOk(served.uri, [
      'read -P 0x11 0 1M',
      'read -P 0xaa 1M 256K',
      'read -P 0x11 1280K 768K',
      'read -P 0 2M 64K',
      'read -P 0x22 3M 3M',
      'read -P 0x33 6M 1M',
      'read -P 0xbb 7M 2M',
      'read -P 0 9M 3M',
      'read -P 0xcc 12M 100K',
      'read -P 0 15M 1M',
    ])
  })

  it('shows the same allocation to qemu-img map over NBD as addcow map', async () => {
    const overNbd = JSON.parse(
      await tool('qemu-img', ['map', '--output=json', '-f', 'raw', served.uri]),
    ) as {
      start: number
      length: number
      data: boolean
      zero: boolean
    }[]
    const ours = await addcow(['map', '--json', image.overlay], { dataDir })
    expect(ours.code, ours.stderr).toBe(0)
    const engine = JSON.parse(ours.stdout) as {
      start: number
      length: number
      data: boolean
      zero: boolean
    }[]
    const runs = (
      extents: { start: number; length: number; data: boolean; zero: boolean }[],
    ): string[] => {
      const merged: { start: number; length: number; key: string }[] = []
      for (const extent of extents) {
        const key = `data=${extent.data} zero=${extent.zero}`
        const last = merged[merged.length - 1]
        if (last && last.key === key) last.length += extent.length
        else merged.push({ start: extent.start, length: extent.length, key })
      }
      return merged.map((run) => `${run.start}+${run.length} ${run.key}`)
    }
    expect(runs(overNbd)).toEqual(runs(engine))
    // The part past the base's end that nobody wrote is a hole over NBD too.
    expect(overNbd.some((extent) => !extent.data && extent.zero)).toBe(true)
  })

  it('copies the whole export with nbdcopy, equal to the guest view', async () => {
    const copy = join(folder.path, 'copy.raw')
    await tool('nbdcopy', [served.uri, copy])
    const [copied, reference] = await Promise.all([readFile(copy), readFile(image.reference)])
    expect(copied.length).toBe(16 * MIB)
    expect(copied.equals(reference)).toBe(true)
  })

  it('serves four concurrent qemu-io clients on separate ranges', async () => {
    const ranges = [0, 1, 2, 3].map((index) => ({
      offset: index * 4 * MIB + 512 * 1024,
      pattern: 0x40 + index,
    }))
    const runs = ranges.map((range) =>
      qemuIo(served.uri, [
        `write -P ${range.pattern} ${range.offset} 1M`,
        `read -P ${range.pattern} ${range.offset} 1M`,
        `write -P ${range.pattern + 8} ${range.offset + MIB} 64K`,
        `read -P ${range.pattern + 8} ${range.offset + MIB} 64K`,
      ]),
    )
    for (const result of await Promise.all(runs)) {
      expect(result.code, result.stderr).toBe(0)
      expect(result.stdout).not.toMatch(/Pattern verification failed/)
    }
    for (const range of ranges) {
      await qemuIoOk(image.reference, [
        `write -P ${range.pattern} ${range.offset} 1M`,
        `write -P ${range.pattern + 8} ${range.offset + MIB} 64K`,
      ])
    }
    const compare = await toolStatus('qemu-img', [
      'compare',
      '-f',
      'raw',
      '-F',
      'raw',
      served.uri,
      image.reference,
    ])
    expect(compare.code, compare.stdout + compare.stderr).toBe(0)
  })

  it('compares equal to a reference raw file with qemu-img compare, and finds a difference', async () => {
    const same = await toolStatus('qemu-img', [
      'compare',
      '-f',
      'raw',
      '-F',
      'raw',
      served.uri,
      image.reference,
    ])
    expect(same.code, same.stdout + same.stderr).toBe(0)
    const changed = join(folder.path, 'changed.raw')
    await copyFile(image.reference, changed)
    await qemuIoOk(changed, ['write -P 0x99 5M 512'])
    const different = await toolStatus('qemu-img', [
      'compare',
      '-f',
      'raw',
      '-F',
      'raw',
      served.uri,
      changed,
    ])
    expect(different.code).toBe(1)
    expect(different.stdout).toMatch(/Content mismatch at offset 5242880/)
  })

  it('survives a hostile client and keeps serving the others', async () => {
    const socketPath = join(folder.path, 'main.sock')
    const garbage = [
      Buffer.from('GET / HTTP/1.1\r\n\r\n'),
      Buffer.alloc(64, 0xff),
      // valid client flags, then half an option header, then the client vanishes
      Buffer.from('0000000149484156454f5054', 'hex'),
    ]
    for (const bytes of garbage) {
      await new Promise<void>((resolve) => {
        const socket = connect(socketPath, () => socket.write(bytes))
        const timer = setTimeout(() => socket.destroy(), 500)
        socket.on('data', () => undefined)
        socket.on('error', () => undefined)
        socket.on('close', () => {
          clearTimeout(timer)
          resolve()
        })
      })
    }
    expect(served.child.exitCode).toBeNull()
    await qemuIoOk(served.uri, ['read -P 0x11 0 64K'])
  })
})

describeTools('addcow serve lifecycle and options', () => {
  it('flushes writes on SIGTERM and SIGINT before it exits', async () => {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      const { overlay } = await makeOverlay(`stop-${signal}`)
      const served = await startServe(
        ['--socket', join(folder.path, `stop-${signal}.sock`), overlay],
        { dataDir },
      )
      // nbdcopy without --flush sends no NBD_CMD_FLUSH: only the server's own flush on the
      // way out makes these writes durable.
      const source = join(folder.path, `source-${signal}.raw`)
      await writeFile(source, Buffer.alloc(MIB, 0x5e))
      await tool('nbdcopy', [source, served.uri])
      expect(await served.stop(signal)).toBe(0)
      expect(served.stderr()).toMatch(/stopping; flushing the image/)
      const disk = await openImage(overlay, { readOnly: true })
      try {
        expect((await disk.read(0, MIB)).equals(Buffer.alloc(MIB, 0x5e))).toBe(true)
        expect((await disk.read(MIB, 4096)).equals(Buffer.alloc(4096, 0x11))).toBe(true)
      } finally {
        await disk.close()
      }
    }
  })

  it('serves read-only on request', async () => {
    const { overlay } = await makeOverlay('read-only')
    const served = await startServe(
      ['--read-only', '--export', 'ro disk', '--socket', join(folder.path, 'ro.sock'), overlay],
      { dataDir },
    )
    try {
      expect(served.uri).toBe(`nbd+unix:///ro%20disk?socket=${join(folder.path, 'ro.sock')}`)
      const info = JSON.parse(await tool('nbdinfo', ['--json', served.uri])) as {
        exports: Record<string, unknown>[]
      }
      expect(info.exports[0]).toMatchObject({
        'export-name': 'ro disk',
        is_read_only: true,
        can_fua: false,
        can_trim: false,
      })
      const write = await qemuIo(served.uri, ['write -P 1 0 4K'])
      expect(write.code !== 0 || /failed|denied|read-only/i.test(write.stdout + write.stderr)).toBe(
        true,
      )
    } finally {
      expect(await served.stop()).toBe(0)
    }
  })

  it('serves TCP on loopback and requires TLS anywhere else; nbdinfo and qemu-img speak its TLS-PSK', async () => {
    const { overlay } = await makeOverlay('tls')
    const refused = await addcow(['serve', '--host', '0.0.0.0', '--port', '0', overlay], {
      dataDir,
    })
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/Refusing to serve on 0\.0\.0\.0 without TLS/)

    const plain = await startServe(['--port', '0', overlay], { dataDir })
    expect(plain.uri).toMatch(/^nbd:\/\/127\.0\.0\.1:\d+\/$/)
    await qemuIoOk(plain.uri, ['read -P 0x11 0 4K'])
    expect(await plain.stop()).toBe(0)

    const pskFolder = join(folder.path, 'psk')
    await mkdir(pskFolder)
    const keys = join(pskFolder, 'keys.psk')
    await writeFile(keys, 'alice:0f1e2d3c4b5a69788796a5b4c3d2e1f0\n')
    const secure = await startServe(
      ['--host', '0.0.0.0', '--port', '0', '--tls-psk-file', keys, overlay],
      { dataDir },
    )
    try {
      expect(secure.uri).toMatch(/^nbds:\/\/0\.0\.0\.0:\d+\/$/)
      const port = /:(\d+)\//.exec(secure.uri)![1]!
      const info = JSON.parse(
        await tool('nbdinfo', ['--json', `nbds://alice@127.0.0.1:${port}/?tls-psk-file=${keys}`]),
      ) as { TLS: boolean; exports: { 'export-size': number }[] }
      expect(info.TLS).toBe(true)
      expect(info.exports[0]!['export-size']).toBe(16 * MIB)
      const withoutTls = await toolStatus('nbdinfo', [`nbd://127.0.0.1:${port}/`])
      expect(withoutTls.code).not.toBe(0)
      const qemu = await tool('qemu-img', [
        'info',
        '--output=json',
        '--object',
        `tls-creds-psk,id=tls0,endpoint=client,dir=${pskFolder},username=alice`,
        '--image-opts',
        `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},tls-creds=tls0`,
      ])
      expect((JSON.parse(qemu) as { 'virtual-size': number })['virtual-size']).toBe(16 * MIB)
    } finally {
      expect(await secure.stop()).toBe(0)
    }
  })

  it('applies the name policy: a base outside the folder is refused unless allowed', async () => {
    const dir = join(folder.path, 'policy')
    await mkdir(join(dir, 'bases'), { recursive: true })
    await mkdir(join(dir, 'overlays'))
    const base = join(dir, 'bases', 'base.raw')
    await writeFile(base, Buffer.alloc(MIB, 7))
    const overlay = join(dir, 'overlays', 'vm.add-cow')
    // Made by the engine directly, so the library holds no trusted pair for it.
    await createOverlay({ overlay, backing: base, backingFormat: 'raw' })
    const refused = await addcow(['serve', '--socket', join(dir, 'p.sock'), overlay], { dataDir })
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/Refusing to open the backing file .*base\.raw.*--allow-name/)
    const allowed = await startServe(
      ['--allow-name', base, '--socket', join(dir, 'p.sock'), overlay],
      { dataDir },
    )
    await qemuIoOk(allowed.uri, ['read -P 7 0 1M'])
    expect(await allowed.stop()).toBe(0)
  })

  it('refuses an overlay whose base changed since it was created, unless --accept-base', async () => {
    const { overlay } = await makeOverlay('drift')
    await tool('qemu-io', [
      '-f',
      'raw',
      '-c',
      'write -P 0x77 0 64K',
      join(folder.path, 'drift', 'base.raw'),
    ])
    const refused = await addcow(['serve', '--socket', join(folder.path, 'drift.sock'), overlay], {
      dataDir,
    })
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/changed since its fingerprint was recorded/)
    const accepted = await startServe(
      ['--accept-base', '--socket', join(folder.path, 'drift.sock'), overlay],
      { dataDir },
    )
    await qemuIoOk(accepted.uri, ['read -P 0x77 0 64K'])
    expect(await accepted.stop()).toBe(0)
    // Accepting recorded the new state: the next serve goes ahead without the flag.
    const again = await startServe(['--socket', join(folder.path, 'drift.sock'), overlay], {
      dataDir,
    })
    expect(await again.stop()).toBe(0)
  })
})
