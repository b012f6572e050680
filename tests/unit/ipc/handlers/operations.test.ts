import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import type { JobInfo } from '../../../../shared/ipc/contract'
import { openImage } from '../../../../main/engine/open'
import { createOverlay } from '../../../../main/engine/ops/create'
import {
  call,
  core,
  dir,
  finished,
  overlayOn,
  patternFile,
  runJob,
  TRUSTED,
  useIpcFolder,
} from '../helpers'

// The operations:* channels (main/ipc/handlers/operations.ts) on real files: check, the blast
// radius of a commit (image:get-blast-radius), commit, flatten, rebase and compare; and the
// rollback of a journaled commit: the request is validated in main (an absolute journal path,
// a boolean force, nothing else), the engine's refusals come back as typed errors on the
// failed job, and a rollback puts the base and the overlay back.

const MIB = 1024 * 1024

useIpcFolder('addcow-ipc-operations-')

async function failure(job: JobInfo): Promise<JobInfo['error']> {
  const outcome = await finished(core, job)
  expect(outcome.event).toBe('jobs:failed')
  return outcome.job.error
}

async function writeInto(path: string, offset: number, byte: number): Promise<void> {
  const disk = await openImage(path, { format: 'add-cow' })
  await disk.write(offset, Buffer.alloc(65536, byte))
  await disk.close()
}

/** A base with a pattern and an overlay on it holding one cluster of `byte` at 1 MiB. */
async function committable(folder: string): Promise<{ base: string; overlay: string }> {
  await mkdir(join(dir, folder))
  const base = join(dir, folder, 'base.raw')
  await patternFile(base, 2 * MIB)
  const overlay = join(dir, folder, 'overlay.add-cow')
  await createOverlay({ overlay, backing: 'base.raw', backingFormat: 'raw' })
  const disk = await openImage(overlay, { format: 'add-cow' })
  await disk.write(MIB, Buffer.alloc(65536, 0x77))
  await disk.close()
  return { base, overlay }
}

async function guestBytes(overlay: string, offset: number, length: number): Promise<Buffer> {
  const disk = await openImage(overlay, { readOnly: true })
  try {
    return await disk.read(offset, length)
  } finally {
    await disk.close()
  }
}

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

describe('operations:rebase-overlay and loops', () => {
  it.each([false, true])(
    'refuses (unsafe: %s) a new base built on the overlay through a flattened child, naming the cycle',
    async (unsafe) => {
      const folder = unsafe ? 'loop-unsafe' : 'loop-safe'
      await mkdir(join(dir, folder))
      await patternFile(join(dir, folder, 'base.raw'), 2 * MIB, 3)
      const x = await overlayOn(folder, 'x.add-cow')
      const y = join(dir, folder, 'y.add-cow')
      await createOverlay({ overlay: y, backing: 'x.add-cow', backingFormat: 'add-cow' })
      const { job: flatten } = await call(core, 'operations:stream-overlay', { overlay: y })
      await runJob(flatten)
      const before = await readFile(x)
      const { job } = await call(core, 'operations:rebase-overlay', {
        overlay: x,
        backing: 'y.add-cow',
        backingFormat: 'add-cow',
        unsafe,
      })
      const error = await failure(job)
      expect(error?.code).toBe('CHAIN_LOOP')
      expect(error?.message).toContain(`${x} → ${y} → ${x}`)
      expect((await readFile(x)).equals(before)).toBe(true)
    },
  )
})

describe('operations:rollback-commit validation', () => {
  it('refuses a malformed request as BAD_REQUEST naming the field, before starting a job', async () => {
    const before = core.jobs.list().length
    const cases: [unknown, string][] = [
      [{ journal: 'relative/commit.undo' }, 'journal'],
      [{ journal: '' }, 'journal'],
      [{ journal: '/tmp/a\0b.undo' }, 'journal'],
      [{ journal: `/${'x'.repeat(5000)}` }, 'journal'],
      [{ journal: 42 }, 'journal'],
      [{ journal: '/tmp/commit.undo', force: 'yes' }, 'force'],
    ]
    for (const [payload, field] of cases) {
      const answer = await core.dispatcher.dispatch('operations:rollback-commit', payload, TRUSTED)
      expect(answer, JSON.stringify(payload).slice(0, 80)).toMatchObject({
        ok: false,
        error: { code: 'BAD_REQUEST', field },
      })
    }
    for (const payload of [{}, null, 'text', { journal: '/tmp/commit.undo', undo: '/tmp/x' }]) {
      expect(
        await core.dispatcher.dispatch('operations:rollback-commit', payload, TRUSTED),
      ).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } })
    }
    expect(core.jobs.list().length).toBe(before)
  })

  it('fails the job with a typed error for a missing or corrupt journal', async () => {
    await mkdir(join(dir, 'bad'))
    const missing = join(dir, 'bad', 'missing.undo')
    const { job: gone } = await call(core, 'operations:rollback-commit', { journal: missing })
    expect(await failure(gone)).toMatchObject({ code: 'NOT_FOUND', path: missing })

    const corrupt = join(dir, 'bad', 'corrupt.undo')
    await writeFile(corrupt, Buffer.alloc(4096, 0x41))
    const { job: broken } = await call(core, 'operations:rollback-commit', { journal: corrupt })
    const error = await failure(broken)
    expect(error?.code).toMatch(/^[A-Z_]+$/)
    expect(error?.code).not.toBe('INTERNAL')
    expect(error?.message).toContain(corrupt)
  })
})

describe('operations:rollback-commit', () => {
  it('puts the base back and gives the overlay its data back', async () => {
    const { base, overlay } = await committable('roundtrip')
    const original = await readFile(base)
    const journal = join(dir, 'roundtrip', 'commit.undo')
    const { job: commitJob } = await call(core, 'operations:commit-overlay', {
      overlay,
      undo: journal,
    })
    expect(await runJob(commitJob)).toMatchObject({ emptied: true, undo: journal })
    expect((await readFile(base)).equals(original)).toBe(false)

    const { job } = await call(core, 'operations:rollback-commit', { journal })
    expect(job).toMatchObject({ channel: 'operations:rollback-commit', title: expect.any(String) })
    expect(job.title).toBe('Roll back the commit in commit.undo')
    expect(await runJob(job)).toEqual({
      base,
      overlay,
      restoredBytes: 65536,
      overlayClusters: 1,
      alreadyDone: false,
      dependents: [],
      unchecked: [],
    })
    expect((await readFile(base)).equals(original)).toBe(true)
    expect((await guestBytes(overlay, MIB, 65536)).equals(Buffer.alloc(65536, 0x77))).toBe(true)

    // A second run says it was already done and changes nothing.
    const { job: again } = await call(core, 'operations:rollback-commit', { journal })
    expect(await runJob(again)).toMatchObject({ alreadyDone: true, restoredBytes: 0 })
  })

  it('refuses with BASE_CHANGED when the base changed after the commit, and rolls back with force', async () => {
    const { base, overlay } = await committable('changed')
    const original = await readFile(base)
    const journal = join(dir, 'changed', 'commit.undo')
    const { job: commitJob } = await call(core, 'operations:commit-overlay', {
      overlay,
      undo: journal,
    })
    await runJob(commitJob)
    const changed = await readFile(base)
    changed.fill(0x55, 0, 65536)
    await writeFile(base, changed)

    const { job: refused } = await call(core, 'operations:rollback-commit', { journal })
    expect(await failure(refused)).toMatchObject({ code: 'BASE_CHANGED', path: base })
    expect((await readFile(base)).subarray(0, 4)).toEqual(Buffer.alloc(4, 0x55))

    const { job: forced } = await call(core, 'operations:rollback-commit', { journal, force: true })
    expect(await runJob(forced)).toMatchObject({ restoredBytes: 65536, overlayClusters: 1 })
    // The committed range is back as it was; the later change outside it stays.
    expect((await readFile(base)).subarray(MIB, MIB + 65536)).toEqual(
      original.subarray(MIB, MIB + 65536),
    )
    expect((await guestBytes(overlay, MIB, 65536)).equals(Buffer.alloc(65536, 0x77))).toBe(true)
  })
})
