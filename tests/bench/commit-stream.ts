// Benchmark: `addcow commit` and `addcow stream` against qemu-img on the same data.
//
//   npx tsx tests/bench/commit-stream.ts [runs]
//
// A 2 GiB overlay with 25% of its 64 KiB clusters written (2048 runs of 4 clusters, one per
// MiB, at pseudo-random places), as add-cow on a raw base and as qcow2 on a copy of it:
// - commit: the engine's commitOverlay (what `addcow commit` runs) vs `qemu-img commit` (both
//   empty the overlay afterwards);
// - stream: streamOverlay (`addcow stream`) vs `qemu-img rebase -b ''` (both make the overlay
//   standalone), on a base whose first half holds data.
// The engine is timed in-process; the CLI's Node start-up (`addcow --version`) is printed apart.
// Each run starts from fresh files (made outside the timing); which tool goes first alternates
// from run to run (an even number of runs), with a sync before each timed command. Prints the
// median times, their ratio and the geometric mean of the per-run ratios (addcow / qemu-img;
// target <= 1.0). Files live in tests/bench/.work and are deleted at the end.
import { execFileSync, spawnSync } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, open, rm, writeFile } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { nativeStatus } from '../../main/engine/native/index'
import { Library } from '../../main/engine/library'
import { commitOverlay } from '../../main/engine/ops/commit'
import { streamOverlay } from '../../main/engine/ops/stream'
import { openImage } from '../../main/engine/open'
import { median } from '../helpers/numbers'

const GiB = 1024 ** 3
const MiB = 1024 ** 2
const SIZE = 2 * GiB
const CLUSTER = 64 * 1024
/** Runs; rounded up to even, so each tool goes first equally often (see {@link alternate}). */
const RUNS = Math.ceil(Number(process.argv[2] ?? 6) / 2) * 2
const root = fileURLToPath(new URL('../..', import.meta.url))
const work = join(root, 'tests/bench/.work')
const cli = join(root, 'out/cli/addcow.mjs')
const env = { ...process.env, ADDCOW_DATA_DIR: join(work, 'data') }

/** Where the 25% lands: in each MiB, 4 clusters starting at a pseudo-random cluster. */
function allocatedRuns(): [number, number][] {
  const runs: [number, number][] = []
  let state = 12345
  for (let mib = 0; mib < SIZE / MiB; mib++) {
    state = (state * 1103515245 + 12345) >>> 0
    const first = (state >>> 8) % 13
    runs.push([mib * MiB + first * CLUSTER, 4 * CLUSTER])
  }
  return runs
}

function time(command: string, args: string[]): number {
  const start = performance.now()
  const result = spawnSync(command, args, { env, stdio: ['ignore', 'ignore', 'pipe'] })
  const elapsed = performance.now() - start
  if (result.status !== 0)
    throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr.toString()}`)
  return elapsed
}

/**
 * Run the two timed commands in alternating order, each after a sync and once the device is
 * idle ({@link settle}). Whichever runs first
 * after the files are made is slower, by up to a second here, whatever it is (measured: a
 * pause, or writing and deleting another file first, does not remove it; the filesystem is
 * mounted with online discard), so the run count is even and each tool goes first in half the
 * runs; the report's paired ratio (geometric mean of the per-run ratios) cancels the effect.
 */
async function alternate(
  run: number,
  ours: () => Promise<unknown>,
  theirs: () => Promise<unknown>,
): Promise<void> {
  for (const step of run % 2 === 0 ? [ours, theirs] : [theirs, ours]) {
    execFileSync('sync')
    await settle()
    await step()
  }
}

/** The block device under the work folder, for {@link settle}; null if not found. */
function blockDevice(): string | null {
  try {
    const [major, minor] = execFileSync('stat', ['-c', '%Hd:%Ld', work], { encoding: 'utf8' })
      .trim()
      .split(':')
    const path = `/sys/dev/block/${major}:${minor}`
    const device = existsSync(`${path}/partition`) ? `${path}/..` : path
    return existsSync(`${device}/stat`) ? device : null
  } catch {
    return null
  }
}

/** Total I/Os (reads, writes, discards, flushes) the device has completed so far. */
function completedIos(device: string): number {
  const fields = readFileSync(`${device}/stat`, 'utf8').trim().split(/\s+/).map(Number)
  // read I/Os, write I/Os, discard I/Os, flush requests (Documentation/block/stat.rst)
  return (fields[0] ?? 0) + (fields[4] ?? 0) + (fields[11] ?? 0) + (fields[15] ?? 0)
}

/**
 * Wait until the device has been idle for half a second (at most 20 s): what one command
 * leaves to the device (writeback, and the discards of freed blocks, as the filesystem is
 * mounted with online discard here) must not be charged to the next command.
 */
async function settle(): Promise<void> {
  const device = blockDevice()
  if (!device) return
  const deadline = performance.now() + 20_000
  let last = completedIos(device)
  let quietSince = performance.now()
  while (performance.now() < deadline) {
    await new Promise((done) => setTimeout(done, 50))
    const now = completedIos(device)
    const inFlight = readFileSync(`${device}/inflight`, 'utf8').trim().split(/\s+/).map(Number)
    if (now !== last || inFlight.some((count) => count > 0)) {
      last = now
      quietSince = performance.now()
    } else if (performance.now() - quietSince >= 500) {
      return
    }
  }
}

/** Wall time of an engine call in this process (the CLI adds Node's start-up to it). */
async function timeEngine(operation: () => Promise<unknown>): Promise<number> {
  const start = performance.now()
  await operation()
  return performance.now() - start
}

async function sparse(path: string, size: number): Promise<void> {
  await writeFile(path, Buffer.alloc(0))
  const handle = await open(path, 'r+')
  await handle.truncate(size)
  await handle.close()
}

const runs = allocatedRuns()
const qemuIoScript = runs.map(
  ([offset, length], index) => `write -P ${(index % 250) + 1} ${offset} ${length}`,
)

async function addCowOverlay(base: string, overlay: string): Promise<void> {
  await rm(overlay, { force: true })
  await rm(overlay.replace(/\.add-cow$/, '.raw'), { force: true })
  execFileSync(process.execPath, [cli, 'create', '-b', basename(base), '-F', 'raw', overlay], {
    env,
  })
  const disk = await openImage(overlay, { readOnly: false })
  try {
    for (const [index, [offset, length]] of runs.entries())
      await disk.write(offset, Buffer.alloc(length, (index % 250) + 1))
  } finally {
    await disk.close()
  }
}

function qcow2Overlay(base: string, overlay: string): void {
  execFileSync('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-b',
    base,
    '-F',
    'raw',
    overlay,
    String(SIZE),
  ])
  // qemu-io takes one -c per command; feed them in batches to keep the argument list short.
  for (let start = 0; start < qemuIoScript.length; start += 512) {
    const commands = qemuIoScript.slice(start, start + 512).flatMap((command) => ['-c', command])
    execFileSync('qemu-io', ['-f', 'qcow2', ...commands, overlay], { stdio: 'ignore' })
  }
}

async function main(): Promise<void> {
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run npm run build:cli`)
  console.log(
    `native addon: ${nativeStatus().loaded ? 'loaded' : `NOT loaded (${nativeStatus().reason})`}`,
  )
  await rm(work, { recursive: true, force: true })
  await mkdir(work, { recursive: true })
  const library = new Library(join(work, 'data', 'library.json'))
  const startup = median([0, 1, 2].map(() => time(process.execPath, [cli, '--version'])))
  try {
    // commit: sparse raw bases, recreated for every run.
    const commitTimes = { addcow: [] as number[], qemu: [] as number[] }
    for (let run = 0; run < RUNS; run++) {
      const base = join(work, 'commit-base.raw')
      const qbase = join(work, 'commit-qbase.raw')
      await sparse(base, SIZE)
      await sparse(qbase, SIZE)
      await addCowOverlay(base, join(work, 'commit.add-cow'))
      await rm(join(work, 'commit.qcow2'), { force: true })
      qcow2Overlay(qbase, join(work, 'commit.qcow2'))
      await alternate(
        run,
        async () =>
          commitTimes.addcow.push(
            await timeEngine(() =>
              commitOverlay({ overlay: join(work, 'commit.add-cow'), library }),
            ),
          ),
        async () =>
          commitTimes.qemu.push(
            time('qemu-img', ['commit', '-q', '-f', 'qcow2', join(work, 'commit.qcow2')]),
          ),
      )
      const same = spawnSync('qemu-img', [
        'compare',
        '-q',
        '-f',
        'raw',
        '-F',
        'raw',
        base,
        qbase,
      ]).status
      if (same !== 0) throw new Error('commit: the two bases differ afterwards')
    }
    report('commit (2 GiB, 25% allocated)', commitTimes)

    // stream: one base whose first half holds data; overlays recreated for every run.
    const base = join(work, 'stream-base.raw')
    await sparse(base, SIZE)
    const handle = await open(base, 'r+')
    const chunk = Buffer.alloc(8 * MiB)
    for (let offset = 0; offset < SIZE / 2; offset += chunk.length) {
      chunk.fill((offset / chunk.length) % 251)
      await handle.write(chunk, 0, chunk.length, offset)
    }
    await handle.close()
    const streamTimes = { addcow: [] as number[], qemu: [] as number[] }
    for (let run = 0; run < RUNS; run++) {
      await addCowOverlay(base, join(work, 'stream.add-cow'))
      await rm(join(work, 'stream.qcow2'), { force: true })
      qcow2Overlay(base, join(work, 'stream.qcow2'))
      await alternate(
        run,
        async () =>
          streamTimes.addcow.push(
            await timeEngine(() =>
              streamOverlay({ overlay: join(work, 'stream.add-cow'), library }),
            ),
          ),
        async () =>
          streamTimes.qemu.push(
            time('qemu-img', ['rebase', '-q', '-f', 'qcow2', '-b', '', join(work, 'stream.qcow2')]),
          ),
      )
      const same = spawnSync('qemu-img', [
        'compare',
        '-q',
        '-f',
        'raw',
        '-F',
        'qcow2',
        join(work, 'stream.raw'),
        join(work, 'stream.qcow2'),
      ]).status
      if (same !== 0) throw new Error('stream: the flattened images differ')
    }
    report("stream (2 GiB, 25% allocated, base half data) vs rebase -b ''", streamTimes)
    console.log(
      `the addcow CLI adds Node's start-up to these: addcow --version takes ${startup.toFixed(0)} ms here (median of 3)`,
    )
  } finally {
    await rm(work, { recursive: true, force: true })
  }
}

function report(label: string, times: { addcow: number[]; qemu: number[] }): void {
  const ours = median(times.addcow)
  const theirs = median(times.qemu)
  const paired = Math.exp(
    times.addcow.reduce((sum, time, run) => sum + Math.log(time / times.qemu[run]!), 0) /
      times.addcow.length,
  )
  console.log(
    `${label}: addcow engine ${ours.toFixed(0)} ms, qemu-img ${theirs.toFixed(0)} ms, ratio ${(ours / theirs).toFixed(2)}, ` +
      `paired ${paired.toFixed(2)} (${paired <= 1 ? 'target <= 1.0 met' : 'target <= 1.0 NOT met'}; median of ${times.addcow.length}; ` +
      `addcow runs ${times.addcow.map((t) => t.toFixed(0)).join('/')}, qemu-img ${times.qemu.map((t) => t.toFixed(0)).join('/')})`,
  )
}

await main()
