// "Run without saving changes": addcow launch --discard-changes serves a throw-away overlay on
// top of the image. The boot sector of tests/fixtures/boot writes sector 2048 and exits with
// status 33; afterwards the overlay has no cluster allocated and its files are unchanged, and
// the throw-away files are gone with the run folder.
import { createHash } from 'node:crypto'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { vmRunFolder } from '../../../main/qemu/launcher'
import { addcow } from '../../helpers/cli'
import { requireTools, tempDir } from '../../helpers/tools'

const BOOT_SECTOR = fileURLToPath(new URL('../../fixtures/boot/boot.bin', import.meta.url))
const GUEST = ['--headless', '--accel', 'tcg', '-m', '64', '--cpus', '1', '--network', 'none']
const EXIT_DEVICE = ['-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04']

const describeQemu = requireTools('qemu-system-x86_64') ? describe : describe.skip

let folder: { path: string; cleanup: () => Promise<void> }
beforeAll(async () => {
  folder = await tempDir('addcow-discard-')
})
afterAll(async () => folder?.cleanup())

const sha256 = async (path: string): Promise<string> =>
  createHash('sha256')
    .update(await readFile(path))
    .digest('hex')

describeQemu('run without saving changes', () => {
  it('leaves the overlay untouched, while a normal run writes into it', async () => {
    const dataDir = join(folder.path, 'data')
    const disk = Buffer.alloc(2 * 1024 * 1024)
    ;(await readFile(BOOT_SECTOR)).copy(disk, 0)
    await writeFile(join(folder.path, 'base.raw'), disk)
    const overlay = join(folder.path, 'vm.add-cow')
    expect(
      (await addcow(['create', '-b', 'base.raw', '-F', 'raw', overlay], { dataDir })).code,
    ).toBe(0)
    const allocated = async (): Promise<number> => {
      const map = JSON.parse((await addcow(['map', '--json', overlay], { dataDir })).stdout) as {
        depth: number
        length: number
      }[]
      return map.filter((extent) => extent.depth === 0).reduce((sum, e) => sum + e.length, 0)
    }
    const before = [await sha256(overlay), await sha256(join(folder.path, 'vm.raw'))]

    const discarded = await addcow(
      [
        'launch',
        ...GUEST,
        '--discard-changes',
        '--serial',
        join(folder.path, 'a.log'),
        overlay,
        '--',
        ...EXIT_DEVICE,
      ],
      { dataDir, timeout: 120_000 },
    )
    expect(discarded.code, discarded.stderr).toBe(33)
    expect(await readFile(join(folder.path, 'a.log'), 'utf8')).toContain('sector 2048 written')
    expect(await allocated()).toBe(0)
    expect([await sha256(overlay), await sha256(join(folder.path, 'vm.raw'))]).toEqual(before)
    await expect(stat(vmRunFolder(overlay))).rejects.toThrow(/ENOENT/)

    // The same run without the option does write into the overlay (so the check above can fail).
    const kept = await addcow(
      ['launch', ...GUEST, '--serial', join(folder.path, 'b.log'), overlay, '--', ...EXIT_DEVICE],
      { dataDir, timeout: 120_000 },
    )
    expect(kept.code, kept.stderr).toBe(33)
    expect(await allocated()).toBeGreaterThan(0)
  })
})
