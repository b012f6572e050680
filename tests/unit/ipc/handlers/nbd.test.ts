import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { requireTools, tool } from '../../../helpers/tools'
import { call, core, dir, overlayOn, patternFile, runJob, useIpcFolder } from '../helpers'

// The nbd:* channels (main/ipc/handlers/nbd.ts): an NBD export as a job that runs until it is
// stopped, read by qemu-img.

const MIB = 1024 * 1024

useIpcFolder('addcow-ipc-nbd-')

describe('nbd:serve-image and nbd:stop-export', () => {
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
})
