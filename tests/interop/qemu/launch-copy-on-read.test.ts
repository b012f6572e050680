// `addcow launch --copy-on-read` (issue 17 item 4, as `addcow serve --copy-on-read`): the
// guest's reads from the base warm the overlay. The boot sector of tests/fixtures/boot is read
// by the BIOS, writes sector 2048 and exits with status 33: with the option, the cluster the
// BIOS read is in the overlay afterwards with the base's bytes; without it, it is not. The
// choices it cannot go with are refused before QEMU starts.
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { addcow } from '../../helpers/cli'
import { pattern } from '../../helpers/images'
import { requireTools, tempDir } from '../../helpers/tools'

const BOOT_SECTOR = fileURLToPath(new URL('../../fixtures/boot/boot.bin', import.meta.url))
const GUEST = ['--headless', '--accel', 'tcg', '-m', '64', '--cpus', '1', '--network', 'none']
const EXIT_DEVICE = ['-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04']
const MiB = 1024 * 1024
const CLUSTER = 64 * 1024

const describeQemu = requireTools('qemu-system-x86_64') ? describe : describe.skip

let folder: { path: string; cleanup: () => Promise<void> }
let dataDir: string
let base: Buffer
beforeAll(async () => {
  folder = await tempDir('addcow-launch-cor-')
  dataDir = join(folder.path, 'data')
  // The boot sector, then bytes that are not zero (a copy up shows as real data).
  base = pattern(2 * MiB, 7)
  ;(await readFile(BOOT_SECTOR)).copy(base, 0)
  await writeFile(join(folder.path, 'base.raw'), base)
})
afterAll(async () => folder?.cleanup())

/** A new overlay on base.raw (64 KiB clusters); its path. */
async function overlay(name: string): Promise<string> {
  const path = join(folder.path, `${name}.add-cow`)
  const created = await addcow(['create', '-b', 'base.raw', '-F', 'raw', '-c', '64K', path], {
    dataDir,
  })
  expect(created.code, created.stderr).toBe(0)
  return path
}

/** The depth the cluster at `offset` of `image` is read from (0: the overlay itself). */
async function depthAt(image: string, offset: number): Promise<number> {
  const map = JSON.parse((await addcow(['map', '--json', image], { dataDir })).stdout) as {
    start: number
    length: number
    depth: number
  }[]
  const extent = map.find((found) => found.start <= offset && offset < found.start + found.length)
  if (!extent) throw new Error(`map of ${image} does not cover ${offset}`)
  return extent.depth
}

/** Boot `image` with `options` until the guest exits; its stderr. */
async function boot(image: string, options: string[]): Promise<string> {
  const run = await addcow(
    ['launch', ...GUEST, ...options, '--serial', `${image}.log`, image, '--', ...EXIT_DEVICE],
    { dataDir, timeout: 120_000 },
  )
  expect(run.code, run.stderr).toBe(33)
  expect(await readFile(`${image}.log`, 'utf8')).toContain('sector 2048 written')
  return run.stderr
}

describeQemu('addcow launch --copy-on-read', () => {
  it("copies what the guest reads from the base into the overlay; without it the base's clusters stay below", async () => {
    const warmed = await overlay('warm')
    const stderr = await boot(warmed, ['--copy-on-read'])
    expect(stderr).toMatch(/QEMU \d+ started \(nbd, export [^)]*, copy-on-read\)/)
    // The boot sector's cluster was read by the BIOS: it is the overlay's now, as in the base.
    expect(await depthAt(warmed, 0)).toBe(0)
    const image = await readFile(join(folder.path, 'warm.raw'))
    expect(image.subarray(0, CLUSTER).equals(base.subarray(0, CLUSTER))).toBe(true)
    // A cluster nobody read stays below.
    expect(await depthAt(warmed, 2 * MiB - CLUSTER)).toBe(1)
    const view = await addcow(['compare', warmed, join(folder.path, 'base.raw')], { dataDir })
    // The guest's own write differs from the base; everything copied up is the same.
    expect(view.stdout).toMatch(/offset 1048576/)

    const cold = await overlay('cold')
    expect(await boot(cold, [])).not.toContain('copy-on-read')
    expect(await depthAt(cold, 0)).toBe(1)
  }, 300_000)

  it('is refused with a read-only disk, another way to the disk, or a throw-away run', async () => {
    const image = await overlay('refused')
    const refusal = async (options: string[]): Promise<string> => {
      const run = await addcow(['launch', ...GUEST, '--copy-on-read', ...options, image], {
        dataDir,
      })
      expect(run.code).toBe(1)
      return run.stderr
    }
    expect(await refusal(['--read-only'])).toContain(
      'Copy-on-read writes what the guest reads into the image; it cannot go with a read-only disk.',
    )
    expect(await refusal(['--via', 'raw'])).toContain(
      'Copy-on-read needs --via nbd (the export copies what the guest reads), not --via raw.',
    )
    expect(await refusal(['--discard-changes'])).toContain(
      'Copy-on-read would warm the throw-away overlay of a run without saving changes',
    )
    expect(await depthAt(image, 0)).toBe(1)
  }, 120_000)
})
