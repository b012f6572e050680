// `addcow serve --tls-creds DIR`: TLS with X.509 certificates (QEMU's tls-creds-x509 layout,
// what libvirt uses for NBD and what a QEMU on another host connects with), checked by the real
// clients: qemu-io and nbdinfo read and write over it, a client that does not trust our CA or
// speaks no TLS is refused, --tls-verify-clients refuses a client without a certificate, and the
// command line qemu-cmd prints for it boots in QEMU.
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { addcow } from '../../helpers/cli'
import { requireTools, tempDir, tool, toolStatus } from '../../helpers/tools'
import { makeX509Folders, type X509Folders } from '../../helpers/x509'
import { startServe, type ServeProcess } from './serve-process'

const MIB = 1024 * 1024
const FIXTURES = fileURLToPath(new URL('../../fixtures/boot/', import.meta.url))
const available = requireTools('openssl', 'qemu-io', 'qemu-img', 'nbdinfo', 'qemu-system-x86_64')
const describeTls = available ? describe : describe.skip

let folder: { path: string; cleanup: () => Promise<void> }
let dataDir: string
let pki: X509Folders
let overlay: string

beforeAll(async () => {
  folder = await tempDir('addcow-tls-x509-')
  dataDir = join(folder.path, 'data')
  if (!available) return
  pki = await makeX509Folders(folder.path)
  // The boot sector on a 4 MiB base, an overlay on it: qemu-io writes the rest, QEMU boots it.
  const base = Buffer.alloc(4 * MIB)
  ;(await readFile(join(FIXTURES, 'boot.bin'))).copy(base)
  await writeFile(join(folder.path, 'base.raw'), base)
  overlay = join(folder.path, 'tls.add-cow')
  const created = await addcow(['create', '-b', 'base.raw', '-F', 'raw', overlay], { dataDir })
  expect(created.code, created.stderr).toBe(0)
}, 120_000)
afterAll(async () => folder?.cleanup())

function portOf(served: ServeProcess): string {
  return /:(\d+)\//.exec(served.uri)![1]!
}

/** qemu-io on the export at `port` with the client folder `dir`, running `commands`. */
function qemuIo(port: string, dir: string, commands: string[]) {
  return toolStatus('qemu-io', [
    '--object',
    `tls-creds-x509,id=tls0,endpoint=client,dir=${dir}`,
    '--image-opts',
    `driver=nbd,server.type=inet,server.host=127.0.0.1,server.port=${port},tls-creds=tls0`,
    ...commands.flatMap((command) => ['-c', command]),
  ])
}

describeTls('NBD TLS with X.509 certificates', () => {
  it('serves qemu-io and nbdinfo over TLS; a client that trusts another CA, or speaks no TLS, is refused', async () => {
    const served = await startServe(['--port', '0', '--tls-creds', pki.server, overlay], {
      dataDir,
    })
    try {
      expect(served.uri).toMatch(/^nbds:\/\/127\.0\.0\.1:\d+\/$/)
      const port = portOf(served)
      const written = await qemuIo(port, pki.clientWithoutCertificate, [
        'write -P 0x5a 1M 64K',
        'read -P 0x5a 1M 64K',
        'read -P 0 2M 64K',
      ])
      expect(written.code, written.stderr + written.stdout).toBe(0)
      expect(written.stdout).not.toMatch(/Pattern verification failed/)
      const info = JSON.parse(
        await tool('nbdinfo', [
          '--json',
          `nbds://127.0.0.1:${port}/?tls-certificates=${pki.client}`,
        ]),
      ) as { TLS: boolean; exports: { 'export-size': number }[] }
      expect(info.TLS).toBe(true)
      expect(info.exports[0]!['export-size']).toBe(4 * MIB)

      // Our certificate is not signed by the CA this client trusts: the handshake fails.
      const distrusted = await qemuIo(port, pki.otherCa, ['read 0 4K'])
      expect(distrusted.code).not.toBe(0)
      expect(distrusted.stderr + distrusted.stdout).toMatch(/certificate|TLS|verif/i)
      const untrusting = await toolStatus('nbdinfo', [
        `nbds://127.0.0.1:${port}/?tls-certificates=${pki.otherCa}`,
      ])
      expect(untrusting.code).not.toBe(0)
      const plain = await toolStatus('nbdinfo', [`nbd://127.0.0.1:${port}/`])
      expect(plain.code).not.toBe(0)
    } finally {
      expect(await served.stop()).toBe(0)
    }
    // What qemu-io wrote is in the overlay (read back without TLS, from the file).
    const check = await toolStatus('qemu-io', [
      '-f',
      'raw',
      '-r',
      '-c',
      'read -P 0x5a 1M 64K',
      join(folder.path, 'tls.raw'),
    ])
    expect(check.stdout).not.toMatch(/Pattern verification failed/)
    expect(check.code, check.stderr).toBe(0)
  })

  it('with --tls-verify-clients refuses a client without a certificate signed by the CA', async () => {
    const served = await startServe(
      ['--port', '0', '--tls-creds', pki.server, '--tls-verify-clients', overlay],
      { dataDir },
    )
    try {
      const port = portOf(served)
      const anonymous = await qemuIo(port, pki.clientWithoutCertificate, ['read 0 4K'])
      expect(anonymous.code).not.toBe(0)
      const known = await qemuIo(port, pki.client, ['read -P 0x5a 1M 64K'])
      expect(known.code, known.stderr + known.stdout).toBe(0)
      expect(known.stdout).not.toMatch(/Pattern verification failed/)
    } finally {
      expect(await served.stop()).toBe(0)
    }
  })

  it('listens off loopback only with TLS, and says which certificate files are wrong', async () => {
    const open = await startServe(
      ['--host', '0.0.0.0', '--port', '0', '--tls-creds', pki.server, '--read-only', overlay],
      { dataDir },
    )
    expect(open.uri).toMatch(/^nbds:\/\/0\.0\.0\.0:\d+\/$/)
    expect(await open.stop()).toBe(0)
    const missing = await addcow(
      ['serve', '--port', '0', '--tls-creds', pki.clientWithoutCertificate, overlay],
      { dataDir },
    )
    expect(missing.code).toBe(1)
    expect(missing.stderr).toContain(join(pki.clientWithoutCertificate, 'server-cert.pem'))
    const refused = await addcow(['serve', '--host', '0.0.0.0', '--port', '0', overlay], {
      dataDir,
    })
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/without TLS.*--tls-creds/)
  })

  it("qemu-cmd's command line for a remote export carries the TLS object, and QEMU boots through it", async () => {
    const served = await startServe(['--port', '0', '--tls-creds', pki.server, overlay], {
      dataDir,
    })
    try {
      const port = portOf(served)
      const printed = await addcow(
        [
          'qemu-cmd',
          '--json',
          '--host',
          '127.0.0.1',
          '--port',
          port,
          '--tls-creds',
          pki.client,
          ...['--accel', 'tcg', '-m', '64', '--cpus', '1', '--network', 'none', '--headless'],
          overlay,
          '--',
          ...['-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04', '-no-reboot'],
        ],
        { dataDir },
      )
      expect(printed.code, printed.stderr).toBe(0)
      const command = JSON.parse(printed.stdout) as {
        binary: string
        args: string[]
        prerequisite: { args: string[] }
      }
      expect(command.args).toContain(`tls-creds-x509,id=tls0,endpoint=client,dir=${pki.client}`)
      expect(command.args).toContain(
        `driver=nbd,node-name=disk0,server.type=inet,server.host=127.0.0.1,server.port=${port},tls-creds=tls0`,
      )
      expect(command.prerequisite.args).toEqual([
        'addcow',
        'serve',
        '--host',
        '127.0.0.1',
        '--port',
        port,
        '--tls-creds',
        pki.client,
        overlay,
      ])
      const run = await toolStatus(command.binary, command.args, { timeout: 120_000 })
      expect(run.code, run.stderr).toBe(33)
      expect(run.stdout).toBe('addcow boot test: sector 2048 written through int 13h\r\n')
    } finally {
      expect(await served.stop()).toBe(0)
    }
    const remote = await addcow(['qemu-cmd', '--host', '192.0.2.1', overlay], { dataDir })
    expect(remote.code).toBe(1)
    expect(remote.stderr).toMatch(/192\.0\.2\.1.*--tls-creds/)
  })
})
