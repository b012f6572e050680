import { describe, expect, it } from 'vitest'
import type { JobInfo } from '../../../shared/ipc/contract'
import { EngineError } from '../../../main/engine/errors'
import { EventBus } from '../../../main/ipc/events'
import { JobManager, type JobClock } from '../../../main/ipc/jobs'
import { recordingLogger } from './helpers'

// The job manager (main/ipc/jobs.ts): an id at once, throttled progress with a rate and the time
// left, cancel through the signal, failures with their code. Jobs through the IPC are tested in
// handlers/jobs.test.ts.

/** A clock the test moves by hand, with timers that fire when it passes them. */
function manualClock(): JobClock & { advance(milliseconds: number): void } {
  let now = 1_000_000
  const timers = new Map<number, { at: number; callback: () => void }>()
  let nextHandle = 1
  return {
    now: () => now,
    setTimeout(callback, milliseconds) {
      const handle = nextHandle++
      timers.set(handle, { at: now + milliseconds, callback })
      return handle
    },
    clearTimeout(handle) {
      timers.delete(handle as number)
    },
    advance(milliseconds) {
      now += milliseconds
      for (const [handle, timer] of [...timers]) {
        if (timer.at <= now) {
          timers.delete(handle)
          timer.callback()
        }
      }
    },
  }
}

function manager(options: { interval?: number; maxRunning?: number } = {}) {
  const log = recordingLogger()
  const bus = new EventBus(log)
  const clock = manualClock()
  const events: { event: string; job: JobInfo; result?: unknown }[] = []
  bus.subscribe((event, payload) => {
    const job = (payload as { job?: JobInfo }).job ?? (payload as JobInfo)
    events.push({ event, job, result: (payload as { result?: unknown }).result })
  })
  const jobs = new JobManager({
    bus,
    log,
    clock,
    progressIntervalMs: options.interval ?? 250,
    ...(options.maxRunning !== undefined ? { maxRunning: options.maxRunning } : {}),
  })
  return { jobs, clock, events, log }
}

/** A promise and its resolver, to hold a job at a known point. */
function gate(): { promise: Promise<void>; open: () => void } {
  let open!: () => void
  const promise = new Promise<void>((resolve) => {
    open = resolve
  })
  return { promise, open }
}

describe('JobManager', () => {
  it('returns the job at once and reports throttled progress with a rate and the time left', async () => {
    const { jobs, clock, events } = manager()
    const step = gate()
    const release = gate()
    let report: ((done: number, total: number) => void) | null = null
    const job = jobs.start('operations:compare-images', 'Compare', 'bytes', async (run) => {
      report = run.progress
      step.open()
      await release.promise
      return { identical: true, firstDifference: null, sizes: [1, 1] }
    })
    expect(job.state).toBe('running')
    expect(events.map((entry) => entry.event)).toEqual(['jobs:started'])
    await step.promise
    const total = 100 * 1024 * 1024
    // 1 MiB every 50 ms: 20 MiB/s. Only one event per 250 ms goes out.
    for (let index = 1; index <= 40; index++) {
      clock.advance(50)
      report!(index * 1024 * 1024, total)
    }
    // 2 s of reports at 50 ms: one event per 250 ms at most.
    const progress = events.filter((entry) => entry.event === 'jobs:progress')
    expect(progress.length).toBe(8)
    expect(
      progress
        .map((entry) => entry.job.progress.done)
        .every((done, index, all) => index === 0 || done > all[index - 1]!),
    ).toBe(true)
    // The last report, made inside an interval, is not lost: the trailing timer sends it.
    expect(progress.at(-1)!.job.progress.done).toBeLessThan(40 * 1024 * 1024)
    clock.advance(250)
    const last = events.filter((entry) => entry.event === 'jobs:progress').at(-1)!.job
    expect(last.progress.done).toBe(40 * 1024 * 1024)
    expect(last.progress.fraction).toBeCloseTo(0.4)
    expect(last.progress.bytesPerSecond).toBeCloseTo(20 * 1024 * 1024, -3)
    expect(last.progress.secondsLeft).toBeCloseTo(3, 1)
    expect(events.filter((entry) => entry.event === 'jobs:progress').length).toBe(9)
    release.open()
    await jobs.settled(job.id)
    const done = events.at(-1)!
    expect(done.event).toBe('jobs:done')
    expect(done.job).toMatchObject({
      state: 'done',
      progress: { fraction: 1, done: total, secondsLeft: 0 },
    })
    expect(done.result).toEqual({ identical: true, firstDifference: null, sizes: [1, 1] })
  })

  it('names the image a running job works on now, and leaves an ended job as it was', async () => {
    const { jobs, events } = manager()
    const release = gate()
    const job = jobs.start(
      'qemu:launch-vm',
      'Run vm.add-cow in QEMU',
      'steps',
      async () => {
        await release.promise
        return { exit: { code: 0, signal: null, status: 0 }, command: 'qemu-system-x86_64' }
      },
      { image: '/images/vm.add-cow' },
    )
    // A live snapshot made vm-snap1.add-cow the top the VM's export serves.
    jobs.setImage(job.id, '/images/vm-snap1.add-cow')
    expect(jobs.get(job.id)?.image).toBe('/images/vm-snap1.add-cow')
    expect(events.at(-1)).toMatchObject({
      event: 'jobs:progress',
      job: { id: job.id, image: '/images/vm-snap1.add-cow' },
    })
    const sent = events.length
    jobs.setImage(job.id, '/images/vm-snap1.add-cow')
    expect(events.length).toBe(sent)
    release.open()
    await jobs.settled(job.id)
    jobs.setImage(job.id, '/images/other.add-cow')
    expect(jobs.get(job.id)?.image).toBe('/images/vm-snap1.add-cow')
    jobs.setImage('no-such-job', '/images/other.add-cow')
  })

  it('cancels through the signal and ends the job as cancelled', async () => {
    const { jobs, events } = manager()
    const started = gate()
    const job = jobs.start('operations:compare-images', 'Long job', 'steps', async (run) => {
      started.open()
      await new Promise<void>((resolve) => run.signal.addEventListener('abort', () => resolve()))
      throw new EngineError('ABORTED', 'The compare was cancelled.')
    })
    await started.promise
    const reply = jobs.cancel(job.id)
    expect(reply).toMatchObject({ cancelled: true, job: { state: 'cancelling' } })
    await jobs.settled(job.id)
    expect(jobs.get(job.id)).toMatchObject({ state: 'cancelled', error: { code: 'ABORTED' } })
    expect(events.at(-1)).toMatchObject({ event: 'jobs:failed', job: { state: 'cancelled' } })
    expect(jobs.cancel(job.id).cancelled).toBe(false)
    expect(() => jobs.cancel('no-such-job')).toThrow(expect.objectContaining({ code: 'NOT_FOUND' }))
  })

  it('reports a failure with its stable code, and a bug as INTERNAL with the stack logged', async () => {
    const { jobs, log } = manager()
    const refused = jobs.start('operations:create-overlay', 'Create', 'steps', async () => {
      throw new EngineError('ALREADY_EXISTS', '/x.add-cow already exists.', { path: '/x.add-cow' })
    })
    const buggy = jobs.start('operations:create-overlay', 'Create', 'steps', async () => {
      throw new RangeError('index out of range')
    })
    await jobs.settled(refused.id)
    await jobs.settled(buggy.id)
    expect(jobs.get(refused.id)).toMatchObject({
      state: 'failed',
      error: { code: 'ALREADY_EXISTS', path: '/x.add-cow' },
    })
    expect(jobs.get(buggy.id)).toMatchObject({ state: 'failed', error: { code: 'INTERNAL' } })
    expect(String((log.errors[0]?.error as Error).stack)).toContain(
      'RangeError: index out of range',
    )
  })

  it('refuses more jobs than it may run, and forgets finished jobs on request', async () => {
    const { jobs } = manager({ maxRunning: 1 })
    const hold = gate()
    const first = jobs.start('operations:compare-images', 'One', 'steps', () => hold.promise)
    expect(() =>
      jobs.start('operations:compare-images', 'Two', 'steps', async () => undefined),
    ).toThrow(expect.objectContaining({ code: 'BUSY' }))
    hold.open()
    await jobs.settled(first.id)
    expect(jobs.clearFinished()).toBe(1)
    expect(jobs.list()).toEqual([])
  })
})
