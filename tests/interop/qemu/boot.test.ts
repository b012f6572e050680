// Boot a real guest from an add-cow overlay: stock QEMU (TCG) reaches the overlay through
// addcow's NBD export. The guest is tests/fixtures/boot/boot.bin, a boot sector built from
// boot.asm beside it: it writes sector 2048 through int 13h, prints a line on the serial port
// and exits QEMU through isa-debug-exit.
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openImage } from '../../../main/engine/open'
import { ADDCOW_BIN, addcow } from '../../helpers/cli'
import { requireTools, tempDir, tool } from '../../helpers/tools'

const FIXTURES = fileURLToPath(new URL('../../fixtures/boot/', import.meta.url))
const MIB = 1024 * 1024
const SECTOR = 2048 * 512
/** isa-debug-exit turns the guest's 0x10 into QEMU's exit status (0x10 << 1) | 1. */
const SUCCESS = 33
const EXIT_DEVICE = ['-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04']
const GUEST = ['--headless', '--accel', 'tcg', '-m', '64', '--cpus', '1', '--network', 'none']

const available = requireTools('qemu-system-x86_64', 'qemu-img', 'nasm')
const describeQemu = available ? describe : describe.skip

let folder: { path: string; cleanup: () => Promise<void> }
let dataDir: string

/** The sector the guest writes: its 16-byte line 32 times. */
function expectedSector(): Buffer {
  return Buffer.from('ADDCOW-BOOT-OK!\n'.repeat(32))
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/** A 4 MiB raw base: the boot sector, and 0xee where the guest will write (so a change shows). */
async function makeBase(dir: string): Promise<string> {
  const base = Buffer.alloc(4 * MIB)
  ;(await readFile(join(FIXTURES, 'boot.bin'))).copy(base, 0)
  base.fill(0xee, SECTOR, SECTOR + 64 * 1024)
  const path = join(dir, 'base.raw')
  await writeFile(path, base)
  return path
}

beforeAll(async () => {
  folder = await tempDir('addcow-boot-')
  dataDir = join(folder.path, 'data')
})

afterAll(async () => {
  await folder?.cleanup()
})

describeQemu('booting an add-cow overlay', () => {
  it('has boot.bin assembled from boot.asm', async () => {
    const output = join(folder.path, 'boot.bin')
    await tool('nasm', ['-f', 'bin', '-o', output, join(FIXTURES, 'boot.asm')])
    expect((await readFile(output)).equals(await readFile(join(FIXTURES, 'boot.bin')))).toBe(true)
  })

  it('boots with addcow launch --headless over NBD under TCG; the overlay takes the write, the base stays', async () => {
    const base = await makeBase(folder.path)
    const before = sha256(await readFile(base))
    const overlay = join(folder.path, 'vm.add-cow')
    expect(
      (await addcow(['create', '-b', 'base.raw', '-F', 'raw', overlay], { dataDir })).code,
    ).toBe(0)
    const serial = join(folder.path, 'serial.log')

    const run = await addcow(
      ['launch', ...GUEST, '--serial', serial, overlay, '--', ...EXIT_DEVICE, '-no-reboot'],
      { dataDir, timeout: 120_000 },
    )
    expect(run.code, run.stderr).toBe(SUCCESS)
    expect(await readFile(serial, 'utf8')).toBe(
      'addcow boot test: sector 2048 written through int 13h\r\n',
    )
    expect(run.stderr).toMatch(/QEMU \d+ started \(nbd, export nbd\+unix:/)

    expect(sha256(await readFile(base))).toBe(before)
    const disk = await openImage(overlay, { readOnly: true })
    try {
      expect((await disk.read(SECTOR, 512)).equals(expectedSector())).toBe(true)
      // The rest of the written cluster was filled from the base; all else is still the base's.
      expect((await disk.read(SECTOR + 512, 512)).equals(Buffer.alloc(512, 0xee))).toBe(true)
      const extents = await disk.blockStatus(0, disk.size)
      expect(extents.filter((extent) => extent.depth === 0)).toEqual([
        { offset: SECTOR, length: 64 * 1024, depth: 0, present: true, zero: false },
      ])
    } finally {
      await disk.close()
    }
    const imageFile = await readFile(join(folder.path, 'vm.raw'))
    expect(imageFile.subarray(SECTOR, SECTOR + 512).equals(expectedSector())).toBe(true)
  })

  it('streams the console to the terminal, and on SIGTERM powers down, quits after the timeout and flushes', async () => {
    const dir = join(folder.path, 'stop')
    await tool('mkdir', ['-p', dir])
    await makeBase(dir)
    const overlay = join(dir, 'vm.add-cow')
    expect(
      (await addcow(['create', '-b', 'base.raw', '-F', 'raw', overlay], { dataDir })).code,
    ).toBe(0)
    // No isa-debug-exit device: the guest's exit write goes nowhere and it halts, ignoring ACPI
    // power-down, so launch must fall back to QMP quit after --stop-timeout.
    const child = spawn(
      process.execPath,
      [ADDCOW_BIN, 'launch', ...GUEST, '--stop-timeout', '1', overlay],
      {
        env: { ...process.env, ADDCOW_DATA_DIR: dataDir },
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    )
    let stdout = ''
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    const exited = new Promise<number | null>((resolve) =>
      child.once('exit', (code) => resolve(code)),
    )
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no console output: ${stderr}`)), 60_000)
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString()
        if (stdout.includes('\n')) {
          clearTimeout(timer)
          resolve()
        }
      })
    })
    expect(stdout).toBe('addcow boot test: sector 2048 written through int 13h\r\n')
    child.kill('SIGTERM')
    expect(await exited).toBe(0)
    expect(stderr).toMatch(/powering the guest down/)
    const disk = await openImage(overlay, { readOnly: true })
    try {
      expect((await disk.read(SECTOR, 512)).equals(expectedSector())).toBe(true)
    } finally {
      await disk.close()
    }
  })

  it('refuses an overlay whose backing name the policy refuses, before QEMU starts', async () => {
    const dir = join(folder.path, 'refused')
    await tool('mkdir', ['-p', join(dir, 'sub')])
    await makeBase(dir)
    const overlay = join(dir, 'sub', 'vm.add-cow')
    const { createOverlay } = await import('../../../main/engine/ops/create')
    await createOverlay({ overlay, backing: join(dir, 'base.raw'), backingFormat: 'raw' })
    const run = await addcow(['launch', ...GUEST, overlay, '--', ...EXIT_DEVICE], { dataDir })
    expect(run.code).toBe(1)
    expect(run.stderr).toMatch(/Refusing to open the backing file/)
    expect(run.stderr).not.toMatch(/QEMU \d+ started/)
  })
})
