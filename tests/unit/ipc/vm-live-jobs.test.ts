import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { sendControlRequest } from '../../../main/engine/live/control'
import { startExport, type ExportHandle } from '../../../main/nbd/start-export'
import type { VmHandle } from '../../../main/qemu/launcher'
import { liveJobSchema } from '../../../shared/live-control'
import { call, core, dir, finished, overlayOn, patternFile, useIpcFolder } from './helpers'

// A running VM's live flatten as an app job (main/ipc/vm-live-jobs.ts) over a real export
// with its control socket, as `addcow launch` and the app's launcher start one: cancelled
// from the CLI's side (`addcow job cancel`), or from the app, it ends cancelled everywhere,
// never failed. The VM itself is left out: only its export matters here.

useIpcFolder('addcow-vm-live-')
const MiB = 1024 * 1024
let handle: ExportHandle | null = null
afterEach(async () => {
  ;(core.vms as Map<string, VmHandle>).delete('vm-1')
  await handle?.stop()
  handle = null
})

/**
 * Serve a fresh overlay on its own 4 MiB base (no other image reads through it) as the VM job
 * `vm-1`'s export; its control socket.
 */
async function runningVm(name: string): Promise<string> {
  await patternFile(join(dir, `${name}-base.raw`), 4 * MiB)
  const overlay = await overlayOn('', `${name}.add-cow`, `${name}-base.raw`)
  const control = join(dir, `${name}.control`)
  handle = await startExport({
    image: overlay,
    format: 'add-cow',
    listen: { socket: join(dir, `${name}.nbd`) },
    controlSocket: control,
    library: core.library,
  })
  const vm = { live: handle.target, command: { via: 'nbd' } } as unknown as VmHandle
  ;(core.vms as Map<string, VmHandle>).set('vm-1', vm)
  return control
}

/** The live job `id` as the control socket reports it. */
async function liveJob(control: string, id: string) {
  return liveJobSchema.parse(await sendControlRequest(control, 'job-status', { id }))
}

/** Wait until the live job `id` has copied something (it must still run then). */
async function copying(control: string, id: string): Promise<void> {
  for (;;) {
    const job = await liveJob(control, id)
    expect(job.state, job.error?.message).toBe('running')
    if (job.done > 0) return
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

describe('live jobs of a running VM', () => {
  it('a flatten cancelled with addcow job cancel ends cancelled in the app, not failed', async () => {
    const control = await runningVm('cli-cancel')
    // 64 KiB/s: a minute for the disk, so the cancel comes while it copies.
    const { job } = await call(core, 'qemu:flatten-vm', { jobId: 'vm-1', rate: 64 * 1024 })
    // The VM it works on, so the VM's page picks it up again after a reload.
    expect(job.vmJobId).toBe('vm-1')
    await copying(control, 'flatten-1')
    await sendControlRequest(control, 'job-cancel', { id: 'flatten-1' })
    const outcome = await finished(core, job)
    expect(outcome.event).toBe('jobs:failed')
    expect(outcome.job.state).toBe('cancelled')
    expect(outcome.job.error).toEqual({
      code: 'ABORTED',
      message:
        'Live flatten of a running VM: cancelled outside the app (addcow job cancel flatten-1); what it copied stays.',
    })
    expect(core.jobs.get(job.id)?.state).toBe('cancelled')
    expect((await liveJob(control, 'flatten-1')).state).toBe('cancelled')
    expect(core.logger.errors).toEqual([])
  })

  it('a commit cancelled in the app ends cancelled in the export too', async () => {
    const control = await runningVm('app-cancel')
    await handle!.live.write(0, Buffer.alloc(2 * MiB, 0x5a))
    const { job } = await call(core, 'qemu:commit-vm', { jobId: 'vm-1', rate: 64 * 1024 })
    await copying(control, 'commit-1')
    core.jobs.cancel(job.id)
    const outcome = await finished(core, job)
    expect(outcome.job.state).toBe('cancelled')
    expect(outcome.job.error?.message).toBe('Live commit of a running VM (active): cancelled.')
    const live = await liveJob(control, 'commit-1')
    expect(live.state).toBe('cancelled')
    expect(live.error?.code).toBe('ABORTED')
    // The guest's view is unchanged.
    expect((await handle!.live.read(0, 2 * MiB)).every((byte) => byte === 0x5a)).toBe(true)
  })
})
