// `--libvirt`: the libvirt domain of a machine, its disk the NBD export. Every boot source
// under BIOS and UEFI, a TCP export with X.509 TLS and port forwards are checked against
// libvirt's own schema (virt-xml-validate, Debian's libvirt-clients); then libvirt's embedded
// QEMU driver (virsh -c qemu:///embed?root=DIR, no daemon) defines and starts the domain, and
// the boot sector it runs writes its sector into the overlay through the export.
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openImage } from '../../../main/engine/open'
import { findUefiFirmware } from '../../../main/qemu/capabilities'
import { addcow } from '../../helpers/cli'
import { requireTools, tempDir, toolStatus } from '../../helpers/tools'
import { startServe } from '../nbd/serve-process'

const FIXTURES = fileURLToPath(new URL('../../fixtures/boot/', import.meta.url))
const MIB = 1024 * 1024
const SMALL = ['--accel', 'tcg', '-m', '64', '--cpus', '1']

const available = requireTools('virt-xml-validate', 'xmllint', 'qemu-system-x86_64')
const describeLibvirt = available ? describe : describe.skip

let folder: { path: string; cleanup: () => Promise<void> }
let dataDir: string
let overlay: string

beforeAll(async () => {
  folder = await tempDir('addcow-libvirt-')
  dataDir = join(folder.path, 'data')
  const base = Buffer.alloc(4 * MIB)
  ;(await readFile(join(FIXTURES, 'boot.bin'))).copy(base)
  await writeFile(join(folder.path, 'base.raw'), base)
  overlay = join(folder.path, 'vm.add-cow')
  const created = await addcow(['create', '-b', 'base.raw', '-F', 'raw', overlay], { dataDir })
  expect(created.code, created.stderr).toBe(0)
})
afterAll(async () => folder?.cleanup())

/** Validate a domain with libvirt's schema; resolves with virt-xml-validate's output. */
async function validate(name: string, xml: string): Promise<void> {
  const file = join(folder.path, `${name}.xml`)
  await writeFile(file, xml)
  const result = await toolStatus('virt-xml-validate', [file, 'domain'])
  expect(result.code, `${name}:\n${xml}\n${result.stdout}${result.stderr}`).toBe(0)
}

const BOOTS: Record<string, string[]> = {
  disk: [],
  cdrom: ['--cdrom', '/srv/iso/install.iso'],
  kernel: [
    '--kernel',
    '/boot/vmlinuz',
    '--initrd',
    '/boot/initrd.img',
    '--append',
    'console=ttyS0 root=/dev/vda',
  ],
}

describeLibvirt('the libvirt domain', () => {
  it.each(
    Object.keys(BOOTS).flatMap((boot) => ['bios', 'uefi'].map((firmware) => [boot, firmware])),
  )(
    'validates for a machine booting %s under %s, with what the machine says',
    async (boot, firmware) => {
      if (firmware === 'uefi' && (await findUefiFirmware()).length === 0) {
        if (process.env.CI === 'true') throw new Error('no OVMF firmware (apt-get install ovmf)')
        console.warn('SKIP: no OVMF firmware (apt-get install ovmf)')
        return
      }
      const name = `${boot}-${firmware}`
      const saved = await addcow(
        [
          'machine',
          'save',
          '--firmware',
          firmware!,
          ...BOOTS[boot!]!,
          '-m',
          '512',
          '--cpus',
          '3',
          '--forward',
          'tcp:2222:22',
          '--display',
          'vnc',
          name,
          overlay,
          '--',
          '-no-reboot',
        ],
        { dataDir },
      )
      expect(saved.code, saved.stderr).toBe(0)
      const printed = await addcow(['machine', 'cmd', '--libvirt', name], { dataDir })
      expect(printed.code, printed.stderr).toBe(0)
      const xml = printed.stdout
      await validate(name, xml)
      expect(xml).toContain(`<name>addcow-${name}</name>`)
      expect(xml).toContain("<memory unit='MiB'>512</memory>")
      expect(xml).toContain('<vcpu>3</vcpu>')
      expect(xml).toMatch(/<type arch='x86_64' machine='q35'>hvm<\/type>/)
      expect(xml).toMatch(
        /<disk type='network' device='disk'>\s*<driver name='qemu' type='raw'\/>\s*<source protocol='nbd'>\s*<host transport='unix' socket='[^']+\/nbd\.sock'\/>/,
      )
      expect(xml).toContain("<portForward proto='tcp' address='127.0.0.1'>")
      expect(xml).toContain("<range start='2222' to='22'/>")
      expect(xml).toContain("<serial type='pty'>")
      expect(xml).toContain("<graphics type='vnc'")
      expect(xml).toContain("<qemu:arg value='-no-reboot'/>")
      if (firmware === 'uefi') {
        expect(xml).toMatch(/<loader readonly='yes' type='pflash'>\/[^<]+OVMF_CODE[^<]*<\/loader>/)
        expect(xml).toContain(
          `<nvram template='/usr/share/OVMF/OVMF_VARS_4M.fd'>${join(dataDir, 'machines', name, 'OVMF_VARS.fd')}</nvram>`,
        )
      } else {
        expect(xml).not.toContain('<loader')
      }
      if (boot === 'disk')
        expect(xml).toMatch(/<target dev='vda' bus='virtio'\/>\s*<boot order='1'\/>/)
      if (boot === 'cdrom') {
        expect(xml).toMatch(/<target dev='vda' bus='virtio'\/>\s*<boot order='2'\/>/)
        expect(xml).toMatch(/<source file='\/srv\/iso\/install\.iso'\/>[\s\S]*<boot order='1'\/>/)
      }
      if (boot === 'kernel') {
        expect(xml).toContain('<kernel>/boot/vmlinuz</kernel>')
        expect(xml).toContain('<initrd>/boot/initrd.img</initrd>')
        expect(xml).toContain('<cmdline>console=ttyS0 root=/dev/vda</cmdline>')
        expect(xml).not.toContain('<boot order')
      }
    },
  )

  it('validates for a TCP export with X.509 TLS, and refuses what libvirt cannot open', async () => {
    const printed = await addcow(
      [
        'qemu-cmd',
        '--libvirt',
        '--host',
        'storage.example',
        '--port',
        '10809',
        '--export',
        'vm',
        '--tls-creds',
        join(folder.path, 'pki'),
        '--interface',
        'ide',
        '--read-only',
        '--headless',
        overlay,
      ],
      { dataDir },
    )
    expect(printed.code, printed.stderr).toBe(0)
    await validate('tls', printed.stdout)
    expect(printed.stdout).toMatch(
      /<source protocol='nbd' name='vm' tls='yes'>\s*<host name='storage\.example' port='10809'\/>/,
    )
    expect(printed.stdout).toContain('nbd_tls_x509_cert_dir')
    expect(printed.stdout).toMatch(/<target dev='sda' bus='sata'\/>\s*<readonly\/>/)
    expect(printed.stdout).not.toContain('<graphics')

    const native = await addcow(['qemu-cmd', '--libvirt', '--via', 'native', overlay], { dataDir })
    expect(native.code).toBe(1)
    expect(native.stderr).toMatch(/libvirt has no add-cow driver/)
    const psk = await addcow(
      ['qemu-cmd', '--libvirt', '--port', '10809', '--tls-psk-dir', folder.path, overlay],
      { dataDir },
    )
    expect(psk.code).toBe(1)
    expect(psk.stderr).toMatch(/X\.509 certificates only/)
  })

  it('is defined and started by libvirt (embedded QEMU driver), and boots through the export', async () => {
    const root = join(folder.path, 'libvirt')
    await mkdir(join(root, 'etc'), { recursive: true })
    // Run QEMU as this user, log to files (no virtlogd daemon), no sVirt labelling.
    await writeFile(
      join(root, 'etc', 'qemu.conf'),
      'user = "root"\ngroup = "root"\nstdio_handler = "file"\nsecurity_driver = "none"\n',
    )
    const uri = `qemu:///embed?root=${root}`
    const probe = await toolStatus('virsh', ['-c', uri, 'list', '--all'])
    if (probe.code !== 0) {
      const reason = `libvirt's embedded QEMU driver cannot run here: ${(probe.stderr || probe.stdout).trim().split('\n').pop()}`
      if (process.env.CI === 'true') throw new Error(reason)
      console.warn(`SKIP: ${reason}`)
      return
    }
    const socket = join(folder.path, 'libvirt-nbd.sock')
    const printed = await addcow(
      [
        'qemu-cmd',
        '--libvirt',
        '--socket',
        socket,
        ...SMALL,
        '--network',
        'none',
        '--headless',
        overlay,
        '--',
        '-device',
        'isa-debug-exit,iobase=0xf4,iosize=0x04',
        '-no-reboot',
      ],
      { dataDir },
    )
    expect(printed.code, printed.stderr).toBe(0)
    const file = join(folder.path, 'embedded.xml')
    await writeFile(file, printed.stdout)
    const served = await startServe(['--socket', socket, overlay], { dataDir })
    let result: { code: number; stdout: string; stderr: string }
    try {
      // One virsh session: the embedded driver lives as long as virsh does.
      result = await toolStatus(
        'virsh',
        [
          '-c',
          uri,
          `define ${file}; start addcow-vm.add-cow; event addcow-vm.add-cow lifecycle --timeout 120; domstate addcow-vm.add-cow --reason`,
        ],
        { timeout: 180_000 },
      )
    } finally {
      expect(await served.stop()).toBe(0)
    }
    const log = await readFile(join(root, 'log', 'qemu', 'addcow-vm.add-cow.log'), 'utf8').catch(
      () => '',
    )
    expect(result.stdout, result.stderr + log).toContain("Domain 'addcow-vm.add-cow' defined")
    expect(result.stdout, result.stderr + log).toContain("Domain 'addcow-vm.add-cow' started")
    // The boot sector ends QEMU through isa-debug-exit with status 33, which libvirt reports
    // as a crash: the guest ran to its end.
    expect(result.stdout, result.stderr + log).toMatch(/event 'lifecycle' .*: Stopped/)
    const disk = await openImage(overlay, { readOnly: true })
    try {
      expect((await disk.read(2048 * 512, 16)).toString()).toBe('ADDCOW-BOOT-OK!\n')
    } finally {
      await disk.close()
    }
  })
})
