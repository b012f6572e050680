// Boot a real Linux guest on an add-cow overlay with `addcow launch -- -kernel ... -initrd ...`
// (the documented way to pass QEMU options): a Debian kernel unpacked from its .deb and a
// busybox initramfs that makes an ext2 file system on /dev/vda (the overlay, through the NBD
// export) and writes a file. The host then checks the guest view with e2fsck and reads the
// file back with debugfs; the base stays zero.
import { createHash } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { openImage } from '../../../main/engine/open'
import { findUefiFirmware } from '../../../main/qemu/capabilities'
import { addcow } from '../../helpers/cli'
import { GUEST_MACHINE, kernelArgs, linuxGuestSuite } from '../../helpers/linux-guest'
import { tool, toolStatus } from '../../helpers/tools'

const MIB = 1024 * 1024
const DISK_SIZE = 64 * MIB
const PAYLOAD = 'written by a Linux guest through addcow'
const GUEST_SCRIPT = [
  'mke2fs -F /dev/vda >/dev/null',
  'mount -t ext2 /dev/vda /mnt',
  `echo '${PAYLOAD}' > /mnt/hello.txt`,
  'umount /mnt',
  'echo FS-WRITTEN',
].join('\n')

const linux = await linuxGuestSuite('addcow-linux-', GUEST_SCRIPT, { tools: ['e2fsck', 'debugfs'] })
const describeLinux = linux.describe

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/** The overlay's guest view, read through the engine into a flat file for e2fsck/debugfs. */
async function flatten(overlay: string, output: string): Promise<void> {
  const disk = await openImage(overlay, { readOnly: true })
  try {
    await writeFile(output, await disk.read(0, disk.size))
  } finally {
    await disk.close()
  }
}

describeLinux('a Linux guest on an overlay', () => {
  it('boots with launch -- -kernel/-initrd, writes a file system on the overlay, not the base', async () => {
    const dataDir = join(linux.folder, 'data')
    const base = join(linux.folder, 'base.raw')
    await writeFile(base, Buffer.alloc(DISK_SIZE))
    const baseHash = sha256(await readFile(base))
    const overlay = join(linux.folder, 'linux.add-cow')
    expect(
      (await addcow(['create', '-b', 'base.raw', '-F', 'raw', overlay], { dataDir })).code,
    ).toBe(0)
    const extra = kernelArgs(linux.guest)
    const machine = GUEST_MACHINE

    // qemu-cmd prints the line launch runs: the kernel boots, the disk has no boot index.
    const printed = await addcow(['qemu-cmd', '--json', ...machine, overlay, '--', ...extra], {
      dataDir,
    })
    expect(printed.code, printed.stderr).toBe(0)
    const args = (JSON.parse(printed.stdout) as { args: string[] }).args
    expect(args).toContain('virtio-blk-pci,drive=disk0')
    expect(args.join(' ')).not.toContain('bootindex')
    expect(args.slice(-extra.length)).toEqual(extra)

    const serial = join(linux.folder, 'serial.log')
    const run = await addcow(['launch', ...machine, '--serial', serial, overlay, '--', ...extra], {
      dataDir,
      timeout: 300_000,
    })
    const log = await readFile(serial, 'utf8')
    expect(run.code, `${run.stderr}\n${log}`).toBe(0)
    expect(run.stderr).toMatch(/QEMU \d+ started/)
    expect(log).toContain('FS-WRITTEN')
    expect(log).toContain(linux.guest.doneLine)
    expect(log).not.toContain('\u001b[=3h')

    const view = join(linux.folder, 'view.raw')
    await flatten(overlay, view)
    const check = await toolStatus('e2fsck', ['-f', '-n', view])
    expect(check.code, check.stdout + check.stderr).toBe(0)
    expect(await tool('debugfs', ['-R', 'cat /hello.txt', view])).toBe(`${PAYLOAD}\n`)
    expect(sha256(await readFile(base))).toBe(baseHash)
  })

  it('boots the same guest from a saved machine under UEFI (OVMF) through the NBD export', async () => {
    const uefi = await findUefiFirmware()
    if (uefi.length === 0) {
      if (process.env.CI === 'true') throw new Error('no OVMF firmware (apt-get install ovmf)')
      console.warn('SKIP: no OVMF firmware (apt-get install ovmf)')
      return
    }
    const dataDir = join(linux.folder, 'data-uefi')
    const base = join(linux.folder, 'base-uefi.raw')
    await writeFile(base, Buffer.alloc(DISK_SIZE))
    const overlay = join(linux.folder, 'uefi.add-cow')
    expect(
      (await addcow(['create', '-b', 'base-uefi.raw', '-F', 'raw', overlay], { dataDir })).code,
    ).toBe(0)
    const saved = await addcow(
      [
        'machine',
        'save',
        '--firmware',
        'uefi',
        '--kernel',
        linux.guest.kernel,
        '--initrd',
        linux.guest.initrd,
        '--append',
        'console=ttyS0 panic=-1 quiet',
        '--accel',
        'tcg',
        '-m',
        '256',
        '--cpus',
        '1',
        '--network',
        'none',
        '--display',
        'none',
        'linux-uefi',
        overlay,
        '--',
        '-no-reboot',
      ],
      { dataDir },
    )
    expect(saved.code, saved.stderr).toBe(0)
    const serial = join(linux.folder, 'serial-uefi.log')
    const run = await addcow(['machine', 'start', '--serial', serial, 'linux-uefi'], {
      dataDir,
      timeout: 300_000,
    })
    const log = await readFile(serial, 'utf8')
    expect(run.code, `${run.stderr}\n${log}`).toBe(0)
    expect(log).toContain('FS-WRITTEN')
    expect(log).toContain(linux.guest.doneLine)
    // UEFI really ran: OVMF sets up its text console (ESC [=3h, clear screen) before the
    // kernel; SeaBIOS prints nothing on the serial port (the BIOS log above has no escape).
    expect(log).toContain('\u001b[=3h')
    const view = join(linux.folder, 'view-uefi.raw')
    await flatten(overlay, view)
    const check = await toolStatus('e2fsck', ['-f', '-n', view])
    expect(check.code, check.stdout + check.stderr).toBe(0)
    expect(await tool('debugfs', ['-R', 'cat /hello.txt', view])).toBe(`${PAYLOAD}\n`)
  })

  it('fails launch with QEMU\'s message, not "started", when QEMU cannot boot it', async () => {
    const dataDir = join(linux.folder, 'data')
    const overlay = join(linux.folder, 'linux.add-cow')
    const run = await addcow(
      [
        'launch',
        '--headless',
        '--accel',
        'tcg',
        overlay,
        '--',
        '-kernel',
        join(linux.folder, 'missing-vmlinuz'),
      ],
      { dataDir, timeout: 120_000 },
    )
    expect(run.code).not.toBe(0)
    expect(run.stderr).not.toMatch(/started/)
    expect(run.stderr).toMatch(/QEMU exited with status 1 before the guest ran: .*missing-vmlinuz/)
  })
})
