import { readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { JobInfo } from '../../../../shared/ipc/contract'
import { tempDir } from '../../../helpers/tools'
import { finished, patternFile, testCore, TRUSTED, valueOf } from '../helpers'

// The jobs:* channels (main/ipc/handlers/jobs.ts) with real jobs: progress in bytes, cancel at
// the next step, nothing left behind by a cancelled create, and jobs that outlive the window
// that started them.

describe('jobs through the IPC, on real files', () => {
  let cleanup: () => Promise<void>
  let dir: string

  beforeAll(async () => {
    const temp = await tempDir('addcow-ipc-jobs-')
    cleanup = temp.cleanup
    dir = temp.path
    await patternFile(join(dir, 'a.raw'), 48 * 1024 * 1024, 1)
    await patternFile(join(dir, 'b.raw'), 48 * 1024 * 1024, 1)
    await patternFile(join(dir, 'c.raw'), 48 * 1024 * 1024, 2)
  })
  afterAll(() => cleanup())

  it('compares in bytes, with progress events, to the first difference', async () => {
    const core = testCore(join(dir, 'data-compare'))
    const same = valueOf(
      await core.dispatcher.dispatch(
        'operations:compare-images',
        { a: join(dir, 'a.raw'), b: join(dir, 'b.raw') },
        TRUSTED,
      ),
    ) as { job: JobInfo }
    expect(same.job).toMatchObject({
      state: 'running',
      channel: 'operations:compare-images',
      progress: { unit: 'bytes' },
    })
    const outcome = await finished(core, same.job)
    expect(outcome).toMatchObject({
      event: 'jobs:done',
      result: { identical: true, firstDifference: null },
    })
    const progress = core.events.filter((entry) => entry.event === 'jobs:progress')
    expect(progress.length).toBeGreaterThan(2)
    expect((progress.at(-1)!.payload as JobInfo).progress.total).toBe(48 * 1024 * 1024)

    const different = valueOf(
      await core.dispatcher.dispatch(
        'operations:compare-images',
        { a: join(dir, 'a.raw'), b: join(dir, 'c.raw') },
        TRUSTED,
      ),
    ) as { job: JobInfo }
    expect(await finished(core, different.job)).toMatchObject({
      result: { identical: false, firstDifference: 0 },
    })
  })

  it('cancels a running compare at its next step', async () => {
    const core = testCore(join(dir, 'data-cancel'))
    core.bus.subscribe((event, payload) => {
      const job = payload as JobInfo
      if (event === 'jobs:progress' && job.state === 'running' && job.progress.done > 0) {
        void core.dispatcher.dispatch('jobs:cancel-job', { jobId: job.id }, TRUSTED)
      }
    })
    const { job } = valueOf(
      await core.dispatcher.dispatch(
        'operations:compare-images',
        { a: join(dir, 'a.raw'), b: join(dir, 'b.raw') },
        TRUSTED,
      ),
    ) as { job: JobInfo }
    const outcome = await finished(core, job)
    expect(outcome).toMatchObject({
      event: 'jobs:failed',
      job: { state: 'cancelled', error: { code: 'ABORTED' } },
    })
    expect(outcome.job.progress.done).toBeLessThan(48 * 1024 * 1024)
  })

  it('leaves nothing behind when a create is cancelled, and reports a failed create', async () => {
    const core = testCore(join(dir, 'data-create'))
    const overlay = join(dir, 'cancelled.add-cow')
    const { job } = valueOf(
      await core.dispatcher.dispatch(
        'operations:create-overlay',
        { overlay, backing: join(dir, 'a.raw') },
        TRUSTED,
      ),
    ) as { job: JobInfo }
    valueOf(await core.dispatcher.dispatch('jobs:cancel-job', { jobId: job.id }, TRUSTED))
    expect(await finished(core, job)).toMatchObject({ job: { state: 'cancelled' } })
    expect(
      (await readdir(dir)).filter(
        (name) => name.startsWith('cancelled') || name.includes('.creating'),
      ),
    ).toEqual([])
    expect((await core.library.load()).images).toEqual([])

    const existing = join(dir, 'a.raw')
    const failed = valueOf(
      await core.dispatcher.dispatch(
        'operations:create-overlay',
        { overlay: existing, size: 4096 },
        TRUSTED,
      ),
    ) as { job: JobInfo }
    expect(await finished(core, failed.job)).toMatchObject({
      job: { state: 'failed', error: { code: 'ALREADY_EXISTS', path: existing } },
    })
  })

  it('keeps running when the window that started it goes away', async () => {
    const core = testCore(join(dir, 'data-window'))
    const window: string[] = []
    const closeWindow = core.bus.subscribe((event) => window.push(event))
    const { job } = valueOf(
      await core.dispatcher.dispatch(
        'operations:compare-images',
        { a: join(dir, 'a.raw'), b: join(dir, 'c.raw') },
        TRUSTED,
      ),
    ) as { job: JobInfo }
    closeWindow()
    await core.jobs.settled(job.id)
    expect(window).toEqual(['jobs:started'])
    const { jobs } = valueOf(await core.dispatcher.dispatch('jobs:list-jobs', {}, TRUSTED)) as {
      jobs: JobInfo[]
    }
    expect(jobs.find((known) => known.id === job.id)).toMatchObject({ state: 'done' })
  })
})
