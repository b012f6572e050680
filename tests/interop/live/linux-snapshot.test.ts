// A real Linux guest (the launcher's test guest: a Debian kernel and a busybox initramfs) keeps
// running through live snapshots taken with `addcow job snapshot` while it writes files: it
// never sees an I/O error, and afterwards the final top's file system passes e2fsck and holds
// every file (issue 17, "a real Linux guest kept running through a live snapshot").
import { existsSync } from 'node:fs'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import type { LiveStatus } from '../../../shared/live-control'
import { openImage } from '../../../main/engine/open'
import { addcow } from '../../helpers/cli'
import { launchGuestArgs, linuxGuestSuite } from '../../helpers/linux-guest'
import { tool, toolStatus } from '../../helpers/tools'

const MIB = 1024 * 1024
const FILES = 12
/** File i holds 64 KiB of the line "file i" (its own content, so a mix-up shows). */
const GUEST_SCRIPT = [
  // The guest's init waits 10 s for the disk; TCG on a busy host may need longer.
  'for i in $(seq 1 90); do [ -b /dev/vda ] && break; sleep 1; done',
  'mke2fs -F /dev/vda >/dev/null',
  'mount -t ext2 /dev/vda /mnt',
  'echo START-WRITES',
  `for i in $(seq 1 ${FILES}); do`,
  '  yes "file $i" | head -c 65536 > /mnt/f$i',
  '  sync',
  '  echo WROTE-$i',
  '  sleep 1',
  'done',
  'umount /mnt',
  'echo FS-WRITTEN',
].join('\n')

const linux = await linuxGuestSuite('addcow-linux-live-', GUEST_SCRIPT, {
  tools: ['e2fsck', 'debugfs'],
})
const describeLinux = linux.describe

/** Wait until the serial log holds `text` (or the launch ended). */
async function waitForLine(log: string, text: string, running: () => boolean): Promise<void> {
  while (running()) {
    if (existsSync(log) && (await readFile(log, 'utf8')).includes(text)) return
    await new Promise((done) => setTimeout(done, 200))
  }
  throw new Error(`the guest ended before printing ${text}`)
}

describeLinux('a Linux guest through live snapshots', () => {
  it('writes files across two snapshots; the final chain is e2fsck-clean with every file', async () => {
    const dataDir = join(linux.folder, 'data')
    await writeFile(join(linux.folder, 'base.raw'), Buffer.alloc(64 * MIB))
    const overlay = join(linux.folder, 'vm.add-cow')
    expect(
      (await addcow(['create', '-b', 'base.raw', '-F', 'raw', overlay], { dataDir })).code,
    ).toBe(0)
    const control = join(linux.folder, 'vm.control')
    const serial = join(linux.folder, 'serial.log')
    let running = true
    const launched = addcow(launchGuestArgs(linux.guest, overlay, { serial, control }), {
      dataDir,
      timeout: 600_000,
    }).finally(() => (running = false))

    // Snapshot while the guest writes: after its 2nd file, and after its 6th.
    const tops: string[] = []
    for (const after of [2, 6]) {
      await waitForLine(serial, `WROTE-${after}`, () => running)
      const snapshot = await addcow(['job', 'snapshot', '--json', '--control-socket', control], {
        dataDir,
      })
      expect(snapshot.code, snapshot.stderr).toBe(0)
      tops.push((JSON.parse(snapshot.stdout) as { top: string }).top)
    }
    const status = await addcow(['job', 'status', '--json', '--control-socket', control], {
      dataDir,
    })
    expect((JSON.parse(status.stdout) as LiveStatus).chain).toEqual([
      join(linux.folder, 'vm-snap2.add-cow'),
      join(linux.folder, 'vm-snap1.add-cow'),
      overlay,
      join(linux.folder, 'base.raw'),
    ])

    const run = await launched
    const log = await readFile(serial, 'utf8')
    expect(run.code, `${run.stderr}\n${log}`).toBe(0)
    expect(log).toContain('FS-WRITTEN')
    expect(log).not.toMatch(/I\/O error|EXT2-fs error|can't|failed/)
    expect(tops).toEqual([
      join(linux.folder, 'vm-snap1.add-cow'),
      join(linux.folder, 'vm-snap2.add-cow'),
    ])

    // The final top's view: a clean file system holding every file, each its own content.
    const disk = await openImage(tops[1]!, { readOnly: true })
    const view = join(linux.folder, 'view.raw')
    try {
      await writeFile(view, await disk.read(0, disk.size))
    } finally {
      await disk.close()
    }
    const check = await toolStatus('e2fsck', ['-f', '-n', view])
    expect(check.code, check.stdout + check.stderr).toBe(0)
    for (let index = 1; index <= FILES; index++) {
      const content = await tool('debugfs', ['-R', `cat /f${index}`, view])
      expect(content.length).toBe(65536)
      expect(content.startsWith(`file ${index}\n`)).toBe(true)
      expect(
        content
          .split('\n')
          .every((line, at, all) => line === `file ${index}` || at === all.length - 1),
      ).toBe(true)
    }
  }, 600_000)
})
