// A real Linux guest kept running through a live snapshot and a live flatten (issue 17): the
// base is an ext2 file system made on the host with a file in it; `addcow launch` boots a
// Debian kernel and a busybox initramfs whose script mounts /dev/vda (the overlay, through the
// NBD export) and writes a numbered file a second, printing each number, for longer than the
// jobs take. While it writes, `addcow job snapshot` and then `addcow job flatten` run through
// launch's control socket. Files written after the flatten ended prove the guest ran through
// both. Afterwards the snapshot's image file alone is the guest's disk: e2fsck finds it clean
// and every file reads back (debugfs), the base's file too; the base never changed.
import { createHash } from 'node:crypto'
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { addcow } from '../../helpers/cli'
import { launchGuestArgs, linuxGuestSuite } from '../../helpers/linux-guest'
import { tool, toolStatus } from '../../helpers/tools'

const MIB = 1024 * 1024
const DISK_SIZE = 64 * MIB
const BASE_TEXT = 'made on the host before the guest booted'
/** Files the guest writes, one a second: far longer than a snapshot and a 64 MiB flatten. */
const FILES = 60
const fileText = (index: number): string => `file ${index} written by the guest\n`.repeat(200)

const GUEST_SCRIPT = [
  'mount -t ext2 /dev/vda /mnt',
  'cat /mnt/base.txt',
  'echo LOOP-STARTED',
  `i=1; while [ $i -le ${FILES} ]; do`,
  `  n=0; : > /mnt/f$i; while [ $n -lt 200 ]; do echo "file $i written by the guest" >> /mnt/f$i; n=$((n+1)); done`,
  '  sync; echo "WROTE $i"; i=$((i+1)); sleep 1',
  'done',
  'umount /mnt',
  'echo FILES-DONE',
].join('\n')

const linux = await linuxGuestSuite('addcow-linux-live-', GUEST_SCRIPT, {
  tools: ['e2fsck', 'debugfs', 'mke2fs'],
})
const describeLinux = linux.describe

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/** The numbers the guest printed after `WROTE` in `log`. */
function written(log: string): number[] {
  return [...log.matchAll(/WROTE (\d+)/g)].map((match) => Number(match[1]))
}

describeLinux('a Linux guest through live jobs', () => {
  it('keeps running through addcow job snapshot and addcow job flatten; e2fsck clean, files intact', async () => {
    const dir = join(linux.folder, 'vm')
    const dataDir = join(dir, 'data')
    const seed = join(dir, 'seed')
    await mkdir(seed, { recursive: true })
    await writeFile(join(seed, 'base.txt'), `${BASE_TEXT}\n`)
    const base = join(dir, 'base.raw')
    await tool('mke2fs', ['-q', '-F', '-t', 'ext2', '-d', seed, base, `${DISK_SIZE / 1024}`])
    const baseHash = sha256(await readFile(base))
    const created = await addcow(['create', '-b', 'base.raw', '-F', 'raw', 'vm.add-cow'], {
      dataDir,
      cwd: dir,
    })
    expect(created.code, created.stderr).toBe(0)

    const control = join(dir, 'control.sock')
    const serial = join(dir, 'serial.log')
    const launched = addcow(launchGuestArgs(linux.guest, 'vm.add-cow', { serial, control }), {
      dataDir,
      cwd: dir,
      timeout: 600_000,
    })
    const log = async (): Promise<string> => readFile(serial, 'utf8').catch(() => '')
    // The guest has mounted the disk and writes.
    while (!(await log()).includes('WROTE 1')) {
      const settled = await Promise.race([
        launched.then((result) => result),
        new Promise((resolve) => setTimeout(resolve, 500)),
      ])
      if (settled) throw new Error(`launch ended early: ${JSON.stringify(settled)}\n${await log()}`)
    }
    const job = (...args: string[]) =>
      addcow(['job', ...args, '--control-socket', control], { dataDir, cwd: dir, timeout: 300_000 })

    const snapshot = await job('snapshot', '--json')
    expect(snapshot.code, snapshot.stderr).toBe(0)
    const snap = JSON.parse(snapshot.stdout) as { top: string; frozen: string }
    expect(snap.frozen).toBe(join(dir, 'vm.add-cow'))
    const afterSnapshot = Math.max(...written(await log()))

    const flatten = await job('flatten', '--json')
    expect(flatten.code, flatten.stderr).toBe(0)
    const afterFlatten = Math.max(...written(await log()))
    const status = JSON.parse((await job('status', '--json')).stdout) as { chain: string[] }
    // The export reads only the snapshot's image file now: its chain is the one layer.
    expect(status.chain).toEqual([snap.top])

    const run = await launched
    const text = await log()
    expect(run.code, `${run.stderr}\n${text}`).toBe(0)
    expect(text).toContain(BASE_TEXT)
    expect(text).toContain('FILES-DONE')
    expect(text).toContain(linux.guest.doneLine)
    // The guest wrote files after each job ended: it ran through both.
    expect(afterSnapshot).toBeLessThan(FILES)
    expect(afterFlatten).toBeLessThan(FILES)
    expect(Math.max(...written(text))).toBe(FILES)
    console.log(
      `Linux guest: snapshot done after file ${afterSnapshot}, flatten done after file ${afterFlatten}, ${FILES} files written`,
    )

    // The snapshot's image file alone is the guest's disk.
    const flat = snap.top.replace(/\.add-cow$/, '.raw')
    expect((await stat(flat)).size).toBe(DISK_SIZE)
    const check = await toolStatus('e2fsck', ['-f', '-n', flat])
    expect(check.code, check.stdout + check.stderr).toBe(0)
    expect(await tool('debugfs', ['-R', 'cat /base.txt', flat])).toBe(`${BASE_TEXT}\n`)
    for (let index = 1; index <= FILES; index++)
      expect(await tool('debugfs', ['-R', `cat /f${index}`, flat]), `f${index}`).toBe(
        fileText(index),
      )
    const info = JSON.parse(
      (await addcow(['info', '--json', snap.top], { dataDir, cwd: dir })).stdout,
    ) as { 'all-allocated': boolean }
    expect(info['all-allocated']).toBe(true)
    expect(sha256(await readFile(base))).toBe(baseHash)
  }, 480_000)
})
