// A saved UEFI machine keeps its own OVMF variable store in the data folder: the first boot
// copies the template and OVMF writes its boot entries into it; the second boot uses the same
// file as the guest left it (not a fresh copy); `machine copy` copies it, `machine rm` deletes it.
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { findUefiFirmware, uefiVarsTemplateFor } from '../../../main/qemu/capabilities'
import { ADDCOW_BIN, addcow } from '../../helpers/cli'
import { childrenOf, waitFor } from '../../helpers/processes'
import { requireTools, tempDir } from '../../helpers/tools'

const FIXTURES = fileURLToPath(new URL('../../fixtures/boot/', import.meta.url))
const MIB = 1024 * 1024

const available = requireTools('qemu-system-x86_64')
const firmware = await findUefiFirmware()
if (firmware.length === 0) {
  if (process.env.CI === 'true') throw new Error('no OVMF firmware (apt-get install ovmf)')
  console.warn('SKIP: no OVMF firmware (apt-get install ovmf)')
}
const describeUefi = available && firmware.length > 0 ? describe : describe.skip

let folder: { path: string; cleanup: () => Promise<void> }
let dataDir: string

beforeAll(async () => {
  folder = await tempDir('addcow-uefi-vars-')
  dataDir = join(folder.path, 'data')
})
afterAll(async () => folder?.cleanup())

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/**
 * `addcow machine start NAME` until `ready` says the guest got far enough; then QEMU's argv is
 * read and QEMU is stopped with SIGTERM (it flushes its drives; the launcher holds the one QMP
 * connection QEMU accepts).
 */
async function startUntil(
  name: string,
  serial: string,
  ready: () => Promise<boolean>,
): Promise<{ argv: string[]; code: number | null; stderr: string }> {
  const child = spawn(
    process.execPath,
    [ADDCOW_BIN, 'machine', 'start', '--serial', serial, name],
    {
      env: { ...process.env, ADDCOW_DATA_DIR: dataDir },
      stdio: ['ignore', 'ignore', 'pipe'],
    },
  )
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  try {
    await waitFor('QEMU to start', async () => /QEMU \d+ started/.test(stderr))
    await waitFor('the guest', ready, 180_000)
    const qemu = (await childrenOf(child.pid!)).find((found) =>
      found.name.startsWith('qemu-system'),
    )
    if (!qemu) throw new Error(`no QEMU runs under process ${child.pid}`)
    process.kill(qemu.pid, 'SIGTERM')
    return { argv: qemu.argv, code: await exited, stderr }
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL')
  }
}

describeUefi('the UEFI variable store of a saved machine', () => {
  it('is copied from the template on the first boot, written by OVMF, and kept for the next boot', async () => {
    const base = Buffer.alloc(4 * MIB)
    ;(await readFile(join(FIXTURES, 'boot.bin'))).copy(base)
    await writeFile(join(folder.path, 'base.raw'), base)
    const overlay = join(folder.path, 'uefi.add-cow')
    expect(
      (await addcow(['create', '-b', 'base.raw', '-F', 'raw', overlay], { dataDir })).code,
    ).toBe(0)
    const machine = ['--firmware', 'uefi', '--accel', 'tcg', '-m', '128', '--cpus', '1']
    const save = (extra: string[]) =>
      addcow(
        [
          'machine',
          'save',
          '--replace',
          ...machine,
          '--network',
          'none',
          'efi',
          overlay,
          '--',
          ...extra,
        ],
        { dataDir },
      )
    expect((await save([])).code).toBe(0)

    const store = join(dataDir, 'machines', 'efi', 'OVMF_VARS.fd')
    const template = uefiVarsTemplateFor(firmware[0]!)!
    const pflash = `if=pflash,format=raw,unit=1,file=${store}`
    const printed = await addcow(['machine', 'cmd', '--json', 'efi'], { dataDir })
    expect((JSON.parse(printed.stdout) as { args: string[] }).args).toContain(pflash)
    expect(existsSync(store)).toBe(false)

    // First boot: OVMF finds no bootable disk (a BIOS boot sector) and ends in its shell,
    // having written its boot entries into the store by then.
    const serial = join(folder.path, 'serial-1.log')
    const first = await startUntil('efi', serial, async () =>
      (await readFile(serial, 'utf8').catch(() => '')).includes('Shell>'),
    )
    expect(first.argv).toContain(pflash)
    const written = await readFile(store)
    expect(written.length).toBe((await stat(template)).size)
    expect(sha256(written)).not.toBe(sha256(await readFile(template)))
    const info = await stat(store)
    expect(info.mode & 0o777).toBe(0o600)

    // Second boot, held before the firmware runs (-S): the same file, as the guest left it.
    expect((await save(['-S'])).code).toBe(0)
    const second = await startUntil('efi', join(folder.path, 'serial-2.log'), async () => true)
    expect(second.argv).toContain(pflash)
    expect(sha256(await readFile(store))).toBe(sha256(written))
    expect((await stat(store)).ino).toBe(info.ino)

    // A copy of the machine takes a copy of its settings; removing a machine removes its store.
    expect((await addcow(['machine', 'copy', 'efi', 'efi-copy'], { dataDir })).code).toBe(0)
    const copied = join(dataDir, 'machines', 'efi-copy', 'OVMF_VARS.fd')
    expect(sha256(await readFile(copied))).toBe(sha256(written))
    expect((await addcow(['machine', 'rm', 'efi'], { dataDir })).code).toBe(0)
    expect(existsSync(join(dataDir, 'machines', 'efi'))).toBe(false)
    expect(existsSync(copied)).toBe(true)
  })
})
