// A saved machine started by the app (the IPC handlers, as the Machines screen starts it) with
// "Run without saving changes" leaves its overlay untouched, bytes and modification time; the
// same start without it writes into the overlay; the CLI lists the machine the app saved. Then
// "Reset to base" (addcow reset) empties that overlay: without --yes it says what would be lost
// and changes nothing, it is refused while the overlay is served, and with --yes the map shows
// nothing in the overlay, its names are kept, check is clean and the guest reads the base.
import { createHash } from 'node:crypto'
import { readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobInfo } from '../../../shared/ipc/contract'
import { addcow } from '../../helpers/cli'
import { requireTools, tempDir } from '../../helpers/tools'
import { call, finished, testCore } from '../../unit/ipc/helpers'
import { startServe } from '../nbd/serve-process'

const BOOT_SECTOR = fileURLToPath(new URL('../../fixtures/boot/boot.bin', import.meta.url))
const EXIT_DEVICE = ['-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04']

const describeQemu = requireTools('qemu-system-x86_64') ? describe : describe.skip

let folder: { path: string; cleanup: () => Promise<void> }
let dataDir: string
let overlay: string
let image: string

beforeAll(async () => {
  folder = await tempDir('addcow-machine-discard-')
  dataDir = join(folder.path, 'data')
  const disk = Buffer.alloc(2 * 1024 * 1024)
  ;(await readFile(BOOT_SECTOR)).copy(disk, 0)
  await writeFile(join(folder.path, 'base.raw'), disk)
  overlay = join(folder.path, 'vm.add-cow')
  image = join(folder.path, 'vm.raw')
  const created = await addcow(['create', '-b', 'base.raw', '-F', 'raw', overlay], { dataDir })
  expect(created.code, created.stderr).toBe(0)
})
afterAll(async () => folder?.cleanup())

/** Each file's SHA-256 and modification time: what "untouched" means. */
async function fingerprint(paths: string[]): Promise<[string, number][]> {
  return Promise.all(
    paths.map(async (path) => {
      const hash = createHash('sha256')
        .update(await readFile(path))
        .digest('hex')
      return [hash, (await stat(path)).mtimeMs] as [string, number]
    }),
  )
}

/** Bytes the overlay holds itself (depth 0 of `addcow map --json`). */
async function allocated(): Promise<number> {
  const map = await addcow(['map', '--json', overlay], { dataDir })
  expect(map.code, map.stderr).toBe(0)
  return (JSON.parse(map.stdout) as { depth: number; length: number }[])
    .filter((extent) => extent.depth === 0)
    .reduce((sum, extent) => sum + extent.length, 0)
}

describeQemu('a saved machine run from the app without saving changes, then reset', () => {
  it('leaves the overlay untouched (bytes and mtime) with discardChanges, writes into it without', async () => {
    const core = testCore(dataDir, { vmStopTimeoutMs: 500 })
    const { machine } = await call(core, 'machines:save-machine', {
      machine: {
        name: 'boot-test',
        disk: overlay,
        memoryMiB: 64,
        cpus: 1,
        accel: 'tcg',
        network: 'none',
        display: 'none',
        extraArgs: EXIT_DEVICE,
      },
    })
    expect(machine.boot).toEqual({ kind: 'disk' })
    // The CLI sees the machine the app saved (one library file).
    const listed = await addcow(['machine', 'list', '--json'], { dataDir })
    expect(JSON.parse(listed.stdout)).toEqual([machine])

    const start = async (discardChanges: boolean): Promise<unknown> => {
      const { job } = (await call(core, 'machines:start-machine', {
        name: 'boot-test',
        discardChanges,
      })) as { job: JobInfo }
      const outcome = await finished(core, job)
      expect(outcome.event, JSON.stringify(outcome.job.error)).toBe('jobs:done')
      return outcome.event === 'jobs:done' ? outcome.result : null
    }
    const before = await fingerprint([overlay, image])
    // The boot sector writes sector 2048, then exits through isa-debug-exit: (0x10 << 1) | 1.
    expect(await start(true)).toMatchObject({ exit: { status: 33 } })
    expect(await allocated()).toBe(0)
    expect(await fingerprint([overlay, image])).toEqual(before)

    expect(await start(false)).toMatchObject({ exit: { status: 33 } })
    expect(await allocated()).toBeGreaterThan(0)
    await core.jobs.cancelAll()
  })

  it('reset says what is lost without --yes, is refused while served, then empties the overlay', async () => {
    const written = await allocated()
    expect(written).toBeGreaterThan(0)
    const before = await fingerprint([overlay, image])
    const asked = await addcow(['reset', overlay], { dataDir })
    expect(asked.code).toBe(1)
    expect(asked.stderr).toMatch(/1 cluster\(s\), 64 KiB of guest data written in it/)
    expect(asked.stderr).toContain('Nothing was changed')
    expect(await fingerprint([overlay, image])).toEqual(before)

    const served = await startServe(['--socket', join(folder.path, 'serve.sock'), overlay], {
      dataDir,
    })
    try {
      const refused = await addcow(['reset', '--yes', overlay], { dataDir })
      expect(refused.code).not.toBe(0)
      expect(refused.stderr).toMatch(/in use by another process.*reset it/)
    } finally {
      expect(await served.stop()).toBe(0)
    }
    expect(await allocated()).toBe(written)

    // An overlay made on it would see its data vanish: refused, naming it.
    const child = join(folder.path, 'child.add-cow')
    expect((await addcow(['create', '-b', 'vm.add-cow', child], { dataDir })).code).toBe(0)
    const used = await addcow(['reset', '--yes', overlay], { dataDir })
    expect(used.code).not.toBe(0)
    expect(used.stderr).toContain(`${child} (reads through it)`)
    await rm(child)
    await rm(join(folder.path, 'child.raw'))

    const done = await addcow(['reset', '--yes', overlay], { dataDir })
    expect(done.code, done.stderr).toBe(0)
    expect(done.stdout).toContain(`it reads ${join(folder.path, 'base.raw')} again`)
    expect(await allocated()).toBe(0)
    const info = JSON.parse((await addcow(['info', '--json', overlay], { dataDir })).stdout) as {
      'backing-filename': string
      'backing-filename-format': string
      'data-file': string
    }
    expect(info['backing-filename']).toBe('base.raw')
    expect(info['backing-filename-format']).toBe('raw')
    expect(info['data-file']).toBe('vm.raw')
    expect((await addcow(['check', overlay], { dataDir })).code).toBe(0)
    expect(
      (await addcow(['compare', overlay, join(folder.path, 'base.raw')], { dataDir })).code,
    ).toBe(0)
  })

  it('reset of a flattened overlay clears ALL_ALLOCATED and gives every cluster back', async () => {
    expect((await addcow(['stream', overlay], { dataDir })).code).toBe(0)
    const flattened = JSON.parse(
      (await addcow(['info', '--json', overlay], { dataDir })).stdout,
    ) as { 'all-allocated'?: boolean }
    expect(flattened['all-allocated']).toBe(true)
    const done = await addcow(['reset', '--yes', '--json', overlay], { dataDir })
    expect(done.code, done.stderr).toBe(0)
    expect(JSON.parse(done.stdout)).toMatchObject({ wasFlattened: true, dryRun: false })
    const info = JSON.parse((await addcow(['info', '--json', overlay], { dataDir })).stdout) as {
      'all-allocated'?: boolean
    }
    expect(info['all-allocated']).not.toBe(true)
    expect(await allocated()).toBe(0)
    expect((await addcow(['check', overlay], { dataDir })).code).toBe(0)
    const base = join(folder.path, 'base.raw')
    expect((await addcow(['compare', overlay, base], { dataDir })).code).toBe(0)
  })
})
