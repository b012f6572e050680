// Boot from a CD-ROM image built in the test (nasm + xorriso, El Torito no-emulation): a saved
// machine with --cdrom boots the CD first although the disk is bootable too. The CD's code
// prints a line and exits QEMU with 0x21 (status 67); the disk's boot sector exits with 0x10
// (status 33), so the status says which one booted.
import { readFile, writeFile, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { addcow } from '../../helpers/cli'
import { requireTools, tempDir, tool } from '../../helpers/tools'

const BOOT_SECTOR = fileURLToPath(new URL('../../fixtures/boot/boot.bin', import.meta.url))
const CD_LINE = 'addcow cdrom boot'
const CD_SOURCE = `bits 16
org 0x7c00
    cli
    xor ax, ax
    mov ds, ax
    mov dx, 0x3f8
    mov si, msg
.next:
    lodsb
    test al, al
    jz .done
    out dx, al
    jmp .next
.done:
    mov al, 0x21
    out 0xf4, al
    hlt
msg db '${CD_LINE}', 13, 10, 0
`
const EXIT_DEVICE = ['-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04']
const MACHINE = [
  '--accel',
  'tcg',
  '-m',
  '64',
  '--cpus',
  '1',
  '--network',
  'none',
  '--display',
  'none',
]

const available = requireTools('qemu-system-x86_64', 'nasm', 'xorriso')
const describeCd = available ? describe : describe.skip

let folder: { path: string; cleanup: () => Promise<void> }
beforeAll(async () => {
  folder = await tempDir('addcow-cdrom-')
})
afterAll(async () => folder?.cleanup())

describeCd('booting a CD-ROM image', () => {
  it('boots the CD before the bootable disk, and the disk when there is no CD', async () => {
    const dataDir = join(folder.path, 'data')
    const disk = Buffer.alloc(2 * 1024 * 1024)
    ;(await readFile(BOOT_SECTOR)).copy(disk, 0)
    await writeFile(join(folder.path, 'base.raw'), disk)
    const overlay = join(folder.path, 'vm.add-cow')
    expect(
      (await addcow(['create', '-b', 'base.raw', '-F', 'raw', overlay], { dataDir })).code,
    ).toBe(0)

    await writeFile(join(folder.path, 'cd.asm'), CD_SOURCE)
    const root = join(folder.path, 'cdroot')
    await mkdir(root)
    await tool('nasm', ['-f', 'bin', '-o', join(root, 'boot.bin'), join(folder.path, 'cd.asm')])
    const iso = join(folder.path, 'boot.iso')
    await tool('xorriso', [
      '-as',
      'mkisofs',
      '-quiet',
      '-o',
      iso,
      '-b',
      'boot.bin',
      '-no-emul-boot',
      '-boot-load-size',
      '4',
      root,
    ])

    for (const [name, cdrom, status, line] of [
      ['with-cd', ['--cdrom', iso], 67, CD_LINE],
      ['disk-only', [], 33, 'addcow boot test: sector 2048 written through int 13h'],
    ] as const) {
      const saved = await addcow(
        ['machine', 'save', ...MACHINE, ...cdrom, name, overlay, '--', ...EXIT_DEVICE],
        { dataDir },
      )
      expect(saved.code, saved.stderr).toBe(0)
      const serial = join(folder.path, `${name}.log`)
      const run = await addcow(['machine', 'start', '--serial', serial, name], {
        dataDir,
        timeout: 120_000,
      })
      expect(run.code, run.stderr).toBe(status)
      expect(await readFile(serial, 'utf8')).toContain(line)
    }
  })
})
