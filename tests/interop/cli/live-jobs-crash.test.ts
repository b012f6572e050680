// kill -9 of `addcow serve` (the built binary, a separate process) in the middle of a live
// flatten and of a live commit started with `addcow job`, while a verifying writer writes
// through the export. After the restart every block holds its last durable write or a later
// one, never data that was never written; `addcow job flatten|commit` on the restarted export
// finishes the job; then every acknowledged write reads back, the files alone hold the guest
// view (qemu-img compare), and `addcow check` is clean. A live commit with `--undo` cut by
// kill -9 is rolled back, or finished, with offline commit's own commands on its journal.
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { sendControlRequest } from '../../../main/engine/live/control'
import { liveJobSchema, type LiveJob } from '../../../shared/live-control'
import { addcow } from '../../helpers/cli'
import { attackSeed, basePattern } from '../../helpers/nbd/fixtures'
import { VerifyingWriter } from '../../helpers/nbd/verifying-writer'
import { BLOCK } from '../../helpers/nbd/write-history'
import { requireTools, tempDir, toolStatus } from '../../helpers/tools'
import { startServe, type ServeProcess } from '../nbd/serve-process'

const MIB = 1024 * 1024
const SIZE = 32 * MIB
const BLOCKS = SIZE / BLOCK

const available = requireTools('qemu-img')
const describeTools = available ? describe : describe.skip

let folder: { path: string; cleanup: () => Promise<void> }
const running = new Set<ServeProcess>()
beforeAll(async () => {
  folder = await tempDir('addcow-live-crash-')
})
afterEach(async () => {
  for (const served of running) await served.stop('SIGKILL')
  running.clear()
})
afterAll(async () => folder?.cleanup())

/** A folder with base.raw (basePattern) and top.add-cow on it, created with the CLI. */
async function setUp(name: string): Promise<{ dir: string; dataDir: string }> {
  const dir = join(folder.path, name)
  const dataDir = join(dir, 'data')
  await mkdir(dir, { recursive: true })
  await writeFile(join(dir, 'base.raw'), basePattern(0, SIZE))
  const created = await addcow(['create', '-b', 'base.raw', '-F', 'raw', 'top.add-cow'], {
    dataDir,
    cwd: dir,
  })
  expect(created.code, created.stderr).toBe(0)
  return { dir, dataDir }
}

/** `addcow serve top.add-cow` with its NBD and control sockets in `dir`. */
async function serve(dir: string, dataDir: string, extra: string[] = []): Promise<ServeProcess> {
  const served = await startServe(
    [
      '--socket',
      join(dir, 'nbd.sock'),
      '--control-socket',
      join(dir, 'control.sock'),
      ...extra,
      'top.add-cow',
    ],
    { dataDir, cwd: dir },
  )
  running.add(served)
  return served
}

/** `addcow job ...` against the export in `dir`. */
function job(dir: string, dataDir: string, ...args: string[]) {
  return addcow(['job', ...args, '--control-socket', join(dir, 'control.sock')], {
    dataDir,
    cwd: dir,
    timeout: 120_000,
  })
}

/** Ask the export how job `id` stands. */
async function jobStatus(dir: string, id: string): Promise<LiveJob> {
  return liveJobSchema.parse(
    await sendControlRequest(join(dir, 'control.sock'), 'job-status', { id }),
  )
}

/** Start a job with --detach, wait until it copied `bytes`, then kill -9 the server. */
async function killDuring(
  dir: string,
  dataDir: string,
  served: ServeProcess,
  writer: VerifyingWriter,
  args: string[],
  bytes: number,
): Promise<LiveJob> {
  const started = await job(dir, dataDir, ...args, '--detach', '--json')
  expect(started.code, started.stderr).toBe(0)
  const { id } = JSON.parse(started.stdout) as { id: string }
  let status = await jobStatus(dir, id)
  while (status.state === 'running' && status.done < bytes) {
    await new Promise((resolve) => setTimeout(resolve, 20))
    status = await jobStatus(dir, id)
  }
  expect(status.state, JSON.stringify(status)).toBe('running')
  writer.expectCrash()
  await served.stop('SIGKILL')
  running.delete(served)
  await writer.close()
  return status
}

/** qemu-img compare of the raw file `image` with the view the writer expects. */
async function sameAsExpected(dir: string, image: string, writer: VerifyingWriter): Promise<void> {
  const expected = join(dir, 'expected.raw')
  await writeFile(
    expected,
    Buffer.concat(Array.from({ length: BLOCKS }, (_, block) => writer.expected(block))),
  )
  const compared = await toolStatus('qemu-img', [
    'compare',
    '-f',
    'raw',
    '-F',
    'raw',
    image,
    expected,
  ])
  expect(compared.code, compared.stdout + compared.stderr).toBe(0)
}

describeTools('kill -9 during live jobs (addcow serve + addcow job)', () => {
  it('a live flatten resumes after kill -9 of the serving process and ends with the guest view in the image file alone', async () => {
    const { dir, dataDir } = await setUp('flatten')
    let served = await serve(dir, dataDir)
    // The writer keeps to the first half: 4K writes at random allocate every cluster within a
    // second on a fast machine, which would leave the flatten nothing to copy when it is killed.
    const writer = await VerifyingWriter.connect(join(dir, 'nbd.sock'), {
      blocks: BLOCKS / 2,
      baseBlocks: BLOCKS,
      seed: attackSeed(),
    })
    writer.start()
    const killed = await killDuring(
      dir,
      dataDir,
      served,
      writer,
      ['flatten', '--rate', '4M'],
      4 * MIB,
    )

    served = await serve(dir, dataDir)
    const newer = await writer.reconnect(join(dir, 'nbd.sock'), 'after kill -9 of the flatten')
    expect(writer.wrong).toEqual([])
    writer.start()
    const resumed = await job(dir, dataDir, 'flatten', '--json')
    expect(resumed.code, resumed.stderr).toBe(0)
    const finished = liveJobSchema.parse(JSON.parse(resumed.stdout))
    await writer.stop()
    console.log(
      `live flatten kill -9 (seed ${writer.seed}): killed at ${killed.done} of ${killed.total} bytes; resumed with ${finished.total} bytes left; ${newer} blocks held an unflushed write that survived; ${writer.counts.acked} writes acknowledged`,
    )
    expect(writer.wrong).toEqual([])
    expect(finished.state).toBe('done')
    expect(writer.mismatches(await writer.readAll())).toEqual([])
    await writer.close()
    expect(await served.stop('SIGTERM')).toBe(0)
    running.delete(served)

    await sameAsExpected(dir, join(dir, 'top.raw'), writer)
    const check = await addcow(['check', 'top.add-cow'], { dataDir, cwd: dir })
    expect(check.code, check.stdout + check.stderr).toBe(0)
    const info = JSON.parse(
      (await addcow(['info', '--json', 'top.add-cow'], { dataDir, cwd: dir })).stdout,
    ) as { 'all-allocated': boolean }
    expect(info['all-allocated']).toBe(true)
  })

  it('a live (active) commit resumes after kill -9 of the serving process and ends with the guest view in the base', async () => {
    const { dir, dataDir } = await setUp('commit')
    let served = await serve(dir, dataDir)
    const writer = await VerifyingWriter.connect(join(dir, 'nbd.sock'), {
      blocks: BLOCKS,
      baseBlocks: BLOCKS,
      seed: attackSeed(),
    })
    writer.start()
    // Most clusters of the top hold guest data before the commit starts, so it has much to copy.
    while (writer.counts.acked < 1500) await new Promise((resolve) => setTimeout(resolve, 10))
    const killed = await killDuring(
      dir,
      dataDir,
      served,
      writer,
      ['commit', '--rate', '4M'],
      4 * MIB,
    )

    // The base changed under the overlay (the commit's own writes, only where the overlay
    // holds its own data): the commit dropped the overlay's fingerprint, so no --accept-base.
    served = await serve(dir, dataDir)
    const newer = await writer.reconnect(join(dir, 'nbd.sock'), 'after kill -9 of the commit')
    expect(writer.wrong).toEqual([])
    writer.start()
    const resumed = await job(dir, dataDir, 'commit', '--json')
    expect(resumed.code, resumed.stderr).toBe(0)
    const finished = liveJobSchema.parse(JSON.parse(resumed.stdout))
    await writer.stop()
    console.log(
      `live commit kill -9 (seed ${writer.seed}): killed at ${killed.done} of ${killed.total} bytes; ${newer} blocks held an unflushed write that survived; ${writer.counts.acked} writes acknowledged`,
    )
    expect(writer.wrong).toEqual([])
    expect(finished.state).toBe('done')
    const status = JSON.parse((await job(dir, dataDir, 'status', '--json')).stdout) as {
      top: string
    }
    expect(status.top).toBe(join(dir, 'base.raw'))
    expect(writer.mismatches(await writer.readAll())).toEqual([])
    await writer.close()
    expect(await served.stop('SIGTERM')).toBe(0)
    running.delete(served)

    await sameAsExpected(dir, join(dir, 'base.raw'), writer)
    const check = await addcow(['check', 'top.add-cow'], { dataDir, cwd: dir })
    expect(check.code, check.stdout + check.stderr).toBe(0)
    const info = JSON.parse(
      (await addcow(['info', '--json', 'top.add-cow'], { dataDir, cwd: dir })).stdout,
    ) as { 'allocated-clusters': number }
    expect(info['allocated-clusters']).toBe(0)
  })

  /**
   * A live (active) commit with --undo, killed with the base partly written: returns the
   * folder, the writer (closed) and the journal's path.
   */
  async function journaledCommitKilled(name: string) {
    const { dir, dataDir } = await setUp(name)
    const served = await serve(dir, dataDir)
    const writer = await VerifyingWriter.connect(join(dir, 'nbd.sock'), {
      blocks: BLOCKS,
      baseBlocks: BLOCKS,
      seed: attackSeed(),
    })
    writer.start()
    while (writer.counts.acked < 1500) await new Promise((resolve) => setTimeout(resolve, 10))
    const journal = join(dir, 'commit.undo')
    const killed = await killDuring(
      dir,
      dataDir,
      served,
      writer,
      ['commit', '--rate', '4M', '--undo', 'commit.undo'],
      4 * MIB,
    )
    // The commit wrote into the base before the kill: a rollback has something to undo.
    expect((await readFile(join(dir, 'base.raw'))).equals(basePattern(0, SIZE))).toBe(false)
    return { dir, dataDir, writer, journal, killed }
  }

  it('a live commit with --undo cut by kill -9 rolls back with addcow commit --rollback: the base byte for byte as before, the guest view intact', async () => {
    const { dir, dataDir, writer, journal, killed } = await journaledCommitKilled('undo-rollback')
    const rolled = await addcow(['commit', '--rollback', journal, '--json'], { dataDir, cwd: dir })
    expect(rolled.code, rolled.stdout + rolled.stderr).toBe(0)
    const rollback = JSON.parse(rolled.stdout) as { restoredBytes: number }
    expect(rollback.restoredBytes).toBeGreaterThan(0)
    expect((await readFile(join(dir, 'base.raw'))).equals(basePattern(0, SIZE))).toBe(true)

    // The overlay still reads every durable write (the commit never emptied it).
    const served = await serve(dir, dataDir)
    const newer = await writer.reconnect(join(dir, 'nbd.sock'), 'after the rollback')
    console.log(
      `live commit --undo kill -9 (seed ${writer.seed}): killed at ${killed.done} of ${killed.total} bytes; rolled back ${rollback.restoredBytes} bytes; ${newer} blocks held an unflushed write that survived`,
    )
    expect(writer.wrong).toEqual([])
    expect(writer.mismatches(await writer.readAll())).toEqual([])
    await writer.close()
    expect(await served.stop('SIGTERM')).toBe(0)
    running.delete(served)
    const check = await addcow(['check', 'top.add-cow'], { dataDir, cwd: dir })
    expect(check.code, check.stdout + check.stderr).toBe(0)
  })

  it('a live commit with --undo cut by kill -9 is finished offline with addcow commit --undo on the same journal', async () => {
    const { dir, dataDir, writer, journal } = await journaledCommitKilled('undo-finish')
    const finished = await addcow(['commit', '--undo', journal, '--json', 'top.add-cow'], {
      dataDir,
      cwd: dir,
    })
    expect(finished.code, finished.stdout + finished.stderr).toBe(0)
    expect((JSON.parse(finished.stdout) as { resumed: boolean }).resumed).toBe(true)
    // The emptied top reads the base: every durable write survived (an unflushed one may be
    // newer), and the base file alone holds that view.
    const served = await serve(dir, dataDir)
    await writer.reconnect(join(dir, 'nbd.sock'), 'after the offline end of the live commit')
    expect(writer.wrong).toEqual([])
    expect(writer.mismatches(await writer.readAll())).toEqual([])
    await writer.close()
    expect(await served.stop('SIGTERM')).toBe(0)
    running.delete(served)
    await sameAsExpected(dir, join(dir, 'base.raw'), writer)
    const check = await addcow(['check', 'top.add-cow'], { dataDir, cwd: dir })
    expect(check.code, check.stdout + check.stderr).toBe(0)
    const info = JSON.parse(
      (await addcow(['info', '--json', 'top.add-cow'], { dataDir, cwd: dir })).stdout,
    ) as { 'allocated-clusters': number }
    expect(info['allocated-clusters']).toBe(0)
  })
})
