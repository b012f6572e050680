import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import type { JobInfo } from '../../../../shared/ipc/contract'
import { Library } from '../../../../main/engine/library'
import { requireTools } from '../../../helpers/tools'
import {
  call,
  core,
  dir,
  finished,
  overlayOn,
  patternFile,
  TRUSTED,
  useIpcFolder,
} from '../helpers'

// The machines:* channels (main/ipc/handlers/machines.ts): the library file's machines, saved,
// renamed, copied and removed with the library functions the CLI uses; the command line of a
// machine is the one `addcow machine cmd` prints; a running machine is listed with its job and
// is neither removed nor renamed until it stops.

let overlay: string

useIpcFolder('addcow-ipc-machines-', { vmStopTimeoutMs: 500 })
beforeAll(async () => {
  await patternFile(join(dir, 'base.raw'), 1024 * 1024)
  overlay = await overlayOn('.', 'vm.add-cow')
})

const SMALL = { memoryMiB: 64, cpus: 1, network: 'none', display: 'none', accel: 'tcg' } as const

describe('machines: saved in the library file', () => {
  it('saves, refuses a name in use, renames, copies and removes', async () => {
    const { machine } = await call(core, 'machines:save-machine', {
      machine: { name: 'one', disk: overlay, ...SMALL },
    })
    expect(machine).toMatchObject({ name: 'one', firmware: 'bios', boot: { kind: 'disk' } })
    // The CLI's library functions read the same file.
    expect(await new Library(join(dir, 'data', 'library.json')).machine('one')).toEqual(machine)

    const again = await core.dispatcher.dispatch(
      'machines:save-machine',
      { machine: { name: 'one', disk: overlay } },
      TRUSTED,
    )
    expect(again).toMatchObject({ ok: false, error: { code: 'ALREADY_EXISTS', field: 'name' } })

    await call(core, 'machines:save-machine', {
      machine: { ...machine, name: 'renamed', cpus: 2 },
      previousName: 'one',
    })
    await call(core, 'machines:copy-machine', { name: 'renamed', newName: 'copy' })
    const listed = await call(core, 'machines:list-machines', {})
    expect(listed.machines.map((entry) => [entry.name, entry.cpus, entry.runningJob])).toEqual([
      ['copy', 2, null],
      ['renamed', 2, null],
    ])
    expect(await call(core, 'machines:remove-machine', { name: 'copy' })).toEqual({
      removed: 'copy',
    })
    const gone = await core.dispatcher.dispatch(
      'machines:remove-machine',
      { name: 'copy' },
      TRUSTED,
    )
    expect(gone).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
  })

  it('refuses a machine the schema refuses, naming the field', async () => {
    const bad = await core.dispatcher.dispatch(
      'machines:save-machine',
      { machine: { name: '-bad name', disk: 'relative.add-cow' } },
      TRUSTED,
    )
    expect(bad).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } })
    expect(bad.ok ? '' : bad.error.message).toMatch(/machine\.name|machine\.disk/)
  })

  it("shows the command line the machine's start runs", async () => {
    const command = await call(core, 'machines:get-command', { name: 'renamed' })
    expect(command.args).toContain('addcow-renamed')
    expect(command.args.join(' ')).toContain('-m 64')
  })
})

describe.skipIf(!requireTools('qemu-system-x86_64'))('a running machine', () => {
  it('is listed with its job, and is not removed or renamed until it stops', async () => {
    const { job } = (await call(core, 'machines:start-machine', { name: 'renamed' })) as {
      job: JobInfo
    }
    while (core.jobs.get(job.id)?.detail === null && core.jobs.get(job.id)?.state === 'running')
      await new Promise((resolve) => setTimeout(resolve, 20))
    const listed = await call(core, 'machines:list-machines', {})
    expect(listed.machines.find((entry) => entry.name === 'renamed')?.runningJob).toBe(job.id)
    const twice = await core.dispatcher.dispatch(
      'machines:start-machine',
      { name: 'renamed' },
      TRUSTED,
    )
    // A second start is a job that fails at once: the machine runs already.
    if (!twice.ok) throw new Error(twice.error.message)
    const second = await finished(core, (twice.value as { job: JobInfo }).job)
    expect(second.event).toBe('jobs:failed')
    expect(second.job.error?.code).toBe('BUSY')
    const removed = await core.dispatcher.dispatch(
      'machines:remove-machine',
      { name: 'renamed' },
      TRUSTED,
    )
    expect(removed).toMatchObject({ ok: false, error: { code: 'BUSY' } })
    const renamed = await core.dispatcher.dispatch(
      'machines:save-machine',
      {
        machine: { name: 'other', disk: overlay, ...SMALL },
        previousName: 'renamed',
      },
      TRUSTED,
    )
    expect(renamed).toMatchObject({ ok: false, error: { code: 'BUSY' } })

    expect(await call(core, 'qemu:stop-vm', { jobId: job.id, force: true })).toEqual({
      stopping: true,
    })
    expect((await finished(core, job)).event).toBe('jobs:done')
    const after = await call(core, 'machines:list-machines', {})
    expect(after.machines.find((entry) => entry.name === 'renamed')?.runningJob).toBeNull()
  })
})
