import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobInfo } from '../../../shared/ipc/contract'
import { createOverlay } from '../../../main/engine/ops/create'
import { openImage } from '../../../main/engine/open'
import { requireTools, tempDir, tool } from '../../helpers/tools'
import { call, finished, patternFile, testCore, TRUSTED } from './helpers'

// The operations and sessions through the IPC on real files: check, the blast radius of a
// commit, commit, flatten and rebase; an NBD export read by qemu-img; a VM booted by QEMU on an
// overlay, with its serial console arriving as events.

const MIB = 1024 * 1024
const BOOT_SECTOR = fileURLToPath(new URL('../../fixtures/boot/boot.bin', import.meta.url))
let cleanup: () => Promise<void>
let dir: string
let core: ReturnType<typeof testCore>

async function runJob(job: JobInfo): Promise<unknown> {
  const outcome = await finished(core, job)
  if (outcome.event === 'jobs:failed')
    throw new Error(`${job.title}: ${outcome.job.error?.code} ${outcome.job.error?.message}`)
  return outcome.result
}

async function overlayOn(folder: string, name: string, base = 'base.raw'): Promise<string> {
  const path = join(dir, folder, name)
  await createOverlay({ overlay: path, backing: base, backingFormat: 'raw' })
  return path
}

async function writeInto(path: string, offset: number, byte: number): Promise<void> {
  const disk = await openImage(path, { format: 'add-cow' })
  await disk.write(offset, Buffer.alloc(65536, byte))
  await disk.close()
}

beforeAll(async () => {
  const temp = await tempDir('addcow-ipc-sessions-')
  cleanup = temp.cleanup
  dir = temp.path
  core = testCore(join(dir, 'data'), { vmStopTimeoutMs: 500 })
})
afterAll(async () => {
  await core.jobs.cancelAll()
  await cleanup()
})

describe('operations', () => {
  it('checks, shows the blast radius, commits only with force when others share the base', async () => {
    await mkdir(join(dir, 'ops'))
    const base = join(dir, 'ops', 'base.raw')
    await patternFile(base, 2 * MIB)
    const mine = await overlayOn('ops', 'mine.add-cow')
    const theirs = await overlayOn('ops', 'theirs.add-cow')
    await writeInto(mine, MIB, 0x77)

    const { job: checkJob } = await call(core, 'operations:check-image', { path: mine })
    const checked = await runJob(checkJob)
    expect(checked).toMatchObject({ exitCode: 0, report: { corruptions: 0, leaks: 0 } })

    const radius = await call(core, 'image:get-blast-radius', { overlay: mine })
    expect(radius.base).toBe(base)
    expect(radius.dependents.map((dependent) => dependent.path)).toEqual([theirs])

    const { job: refused } = await call(core, 'operations:commit-overlay', { overlay: mine })
    const outcome = await finished(core, refused)
    expect(outcome).toMatchObject({
      event: 'jobs:failed',
      job: { error: { code: 'CONFIRMATION_REQUIRED' } },
    })
    expect((await readFile(base)).subarray(MIB, MIB + 4)).not.toEqual(Buffer.alloc(4, 0x77))

    const { job: forced } = await call(core, 'operations:commit-overlay', {
      overlay: mine,
      force: true,
    })
    expect(await runJob(forced)).toMatchObject({ base, clusters: 1, bytes: 65536, emptied: true })
    expect(
      (await readFile(base)).subarray(MIB, MIB + 65536).equals(Buffer.alloc(65536, 0x77)),
    ).toBe(true)
  })

  it('flattens an overlay into a standalone raw disk, and rebases another', async () => {
    await mkdir(join(dir, 'flat'))
    await patternFile(join(dir, 'flat', 'base.raw'), 2 * MIB, 5)
    await patternFile(join(dir, 'flat', 'other.raw'), 2 * MIB, 6)
    const flat = await overlayOn('flat', 'flat.add-cow')
    const { job } = await call(core, 'operations:stream-overlay', { overlay: flat })
    expect(await runJob(job)).toMatchObject({
      overlay: flat,
      alreadyDone: false,
      copiedBytes: 2 * MIB,
    })
    // (Buffer.equals: a deep equality of 2 MiB buffers takes the test runner seconds.)
    expect(
      (await readFile(join(dir, 'flat', 'flat.raw'))).equals(
        await readFile(join(dir, 'flat', 'base.raw')),
      ),
    ).toBe(true)

    const moved = await overlayOn('flat', 'moved.add-cow')
    const { job: rebase } = await call(core, 'operations:rebase-overlay', {
      overlay: moved,
      backing: 'other.raw',
      backingFormat: 'raw',
    })
    expect(await runJob(rebase)).toMatchObject({
      oldBacking: 'base.raw',
      newBacking: 'other.raw',
      unsafe: false,
    })
    const { job: compare } = await call(core, 'operations:compare-images', {
      a: moved,
      b: join(dir, 'flat', 'base.raw'),
    })
    expect(await runJob(compare)).toMatchObject({ identical: true })
  })
})

describe('sessions', () => {
  it('serves an overlay over NBD until stopped; qemu-img reads it', async () => {
    if (!requireTools('qemu-img')) return
    await mkdir(join(dir, 'nbd'))
    await patternFile(join(dir, 'nbd', 'base.raw'), 2 * MIB, 9)
    const overlay = await overlayOn('nbd', 'served.add-cow')
    const socket = join(dir, 'nbd', 'served.sock')
    const { job } = await call(core, 'nbd:serve-image', { path: overlay, socket, readOnly: true })
    while (core.jobs.get(job.id)?.detail === null && core.jobs.get(job.id)?.state === 'running') {
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
    const uri = core.jobs.get(job.id)?.detail ?? ''
    expect(uri).toBe(`nbd+unix:///?socket=${socket}`)
    const info = JSON.parse(await tool('qemu-img', ['info', '--output=json', uri])) as {
      'virtual-size': number
    }
    expect(info['virtual-size']).toBe(2 * MIB)
    await tool('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', uri, join(dir, 'nbd', 'base.raw')])
    expect(await call(core, 'nbd:stop-export', { jobId: job.id })).toEqual({ stopping: true })
    expect(await runJob(job)).toEqual({ uri })
    expect(await call(core, 'nbd:stop-export', { jobId: job.id })).toEqual({ stopping: false })
    await expect(tool('qemu-img', ['info', uri], { timeout: 10_000 })).rejects.toThrow()
  })

  it('boots QEMU on an overlay: the console arrives as events, the writes land in the overlay', async () => {
    if (!requireTools('qemu-system-x86_64')) return
    await mkdir(join(dir, 'vm'))
    const base = join(dir, 'vm', 'base.raw')
    const disk = Buffer.alloc(2 * MIB)
    ;(await readFile(BOOT_SECTOR)).copy(disk, 0)
    await writeFile(base, disk)
    const overlay = await overlayOn('vm', 'boot.add-cow')

    const command = await call(core, 'qemu:get-command', { path: overlay, headless: true })
    expect(command.via).toBe('nbd')
    expect(command.args).toContain('-display')
    expect(command.rendering).toContain(command.binary)

    const { job } = await call(core, 'qemu:launch-vm', {
      path: overlay,
      headless: true,
      memoryMiB: 64,
      extraArgs: ['-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04'],
    })
    const result = (await runJob(job)) as { exit: { status: number } }
    const console = core.events
      .filter((entry) => entry.event === 'qemu:console-output')
      .map((entry) => entry.payload as { sessionId: string; stream: string; text: string })
      .filter((entry) => entry.sessionId === job.id && entry.stream === 'serial')
      .map((entry) => entry.text)
      .join('')
    expect(console).toContain('addcow boot test: sector 2048 written through int 13h')
    expect(result.exit.status).toBe(33)
    // The guest wrote sector 2048 (1 MiB) of its disk: into the overlay, never the base.
    expect((await readFile(base)).subarray(MIB, MIB + 16)).toEqual(Buffer.alloc(16))
    const map = await call(core, 'image:get-map', { path: overlay })
    expect(
      map.extents.find(
        (extent) => extent.depth === 0 && extent.start <= MIB && extent.start + extent.length > MIB,
      ),
    ).toBeDefined()
  })

  it('refuses to stop or type into a job that is not a VM', async () => {
    const { job } = await call(core, 'operations:compare-images', {
      a: join(dir, 'nbd', 'base.raw'),
      b: join(dir, 'nbd', 'base.raw'),
    })
    await finished(core, job)
    expect(
      await core.dispatcher.dispatch('qemu:stop-vm', { jobId: job.id }, TRUSTED),
    ).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
    expect(
      await core.dispatcher.dispatch('qemu:write-console', { jobId: job.id, text: 'x' }, TRUSTED),
    ).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
  })
})
