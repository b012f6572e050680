// Benchmark (issue 15 item 4): `addcow commit` and `addcow stream` against qemu-img on the same
// data, wall time of the command lines (Node's start-up included), target addcow / qemu-img
// <= 0.8:
// - commit: `addcow commit OVERLAY` vs `qemu-img commit` of a qcow2 overlay with the same
//   clusters written (both empty the overlay afterwards), into a sparse raw base;
// - stream: `addcow stream OVERLAY` vs `qemu-img rebase -b ''` (both make the overlay
//   standalone), on a base whose first half holds data;
// on two workloads: "contiguous" (256 MiB written contiguously in a 1 GiB overlay) and
// "scattered" (a 2 GiB overlay, a quarter of its 64 KiB clusters written: 2048 runs of 4
// clusters, one per MiB, at pseudo-random places).
//
//   npm run bench commit-stream [-- runs]        (or npx tsx tests/bench/commit-stream.ts [runs])
//
// Each run starts from fresh files (made outside the timing); which tool goes first rotates
// from run to run, with a sync before each timed command, the device left idle and the page
// cache's free pages warmed (see warmPageCache). Prints the median times, their ratio and the
// geometric mean of the per-run ratios, each side's CPU time (user + system of the command,
// from /proc/self/stat's children times), and the load average.
// ADDCOW_BENCH_BEFORE=/path/to/other/addcow.mjs times another build too (say, main's) in the
// same runs, for a before/after in one run. BENCH_WORKLOADS picks workloads ("contiguous,
// scattered" by default). Files live in tests/bench/.work and are deleted at the end.
import { execFileSync, spawnSync } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs'
import { mkdir, open, rm, writeFile } from 'node:fs/promises'
import { basename, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { nativeStatus } from '../../main/engine/native/index'
import { openImage } from '../../main/engine/open'
import { median } from '../helpers/numbers'

const GiB = 1024 ** 3
const MiB = 1024 ** 2
const CLUSTER = 64 * 1024
const TARGET = 0.8
const RUNS = Number(process.argv[2] ?? 6)
const root = fileURLToPath(new URL('../..', import.meta.url))
const work = join(root, 'tests/bench/.work')
const cli = join(root, 'out/cli/addcow.mjs')
const before = process.env.ADDCOW_BENCH_BEFORE
const env = { ...process.env, ADDCOW_DATA_DIR: join(work, 'data') }

type Side = 'addcow' | 'before' | 'qemu'
const SIDES: Side[] = before ? ['addcow', 'before', 'qemu'] : ['addcow', 'qemu']

/** A workload: the overlay's size and the guest ranges written in it. */
interface Workload {
  name: string
  size: number
  runs: [number, number][]
}

const WORKLOADS: Record<string, Workload> = {
  contiguous: { name: 'contiguous', size: GiB, runs: contiguousRuns(GiB, 256 * MiB) },
  scattered: { name: 'scattered', size: 2 * GiB, runs: scatteredRuns(2 * GiB) },
}

/** `bytes` written from offset 0, in writes of 4 MiB. */
function contiguousRuns(size: number, bytes: number): [number, number][] {
  const runs: [number, number][] = []
  for (let offset = 0; offset < Math.min(size, bytes); offset += 4 * MiB)
    runs.push([offset, Math.min(4 * MiB, bytes - offset)])
  return runs
}

/** In each MiB, 4 clusters starting at a pseudo-random cluster. */
function scatteredRuns(size: number): [number, number][] {
  const runs: [number, number][] = []
  let state = 12345
  for (let mib = 0; mib < size / MiB; mib++) {
    state = (state * 1103515245 + 12345) >>> 0
    const first = (state >>> 8) % 13
    runs.push([mib * MiB + first * CLUSTER, 4 * CLUSTER])
  }
  return runs
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100

/** CPU time (user + system) of this process's waited-for children so far, in milliseconds. */
function childrenCpu(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(fields[13]) + Number(fields[14])) * 1000) / CLOCK_TICKS
}

function load(): string {
  return readFileSync('/proc/loadavg', 'utf8').trim()
}

/** Run a command; its wall time and CPU time (user + system), in milliseconds. */
function time(command: string, args: string[]): { wall: number; cpu: number } {
  const cpuBefore = childrenCpu()
  const start = performance.now()
  const result = spawnSync(command, args, { env, stdio: ['ignore', 'ignore', 'pipe'] })
  const wall = performance.now() - start
  if (result.status !== 0)
    throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr.toString()}`)
  return { wall, cpu: childrenCpu() - cpuBefore }
}

/**
 * Run the timed commands of one run in rotating order, each after a sync, once the device is
 * idle ({@link settle}) and with the page cache's next pages warm ({@link warmPageCache}). Each
 * tool goes first equally often over the runs, and the paired ratio (geometric mean of the
 * per-run ratios) cancels what order effect is left.
 */
async function rotate(run: number, steps: Record<Side, () => void>): Promise<void> {
  for (let index = 0; index < SIDES.length; index++) {
    execFileSync('sync')
    await settle()
    warmPageCache()
    steps[SIDES[(index + run) % SIDES.length]!]()
  }
}

/** Bytes {@link warmPageCache} writes: more than any timed command here puts in the page cache. */
const WARM_BYTES = 1536 * MiB

/**
 * Write WARM_BYTES to a file and delete it before it reaches the disk, so that the page
 * cache's next free pages are ones the machine has just used. In a virtual machine whose
 * balloon reports free pages to the host (virtio-balloon free page reporting, as on the
 * machines this project runs on), memory left free for a couple of seconds goes back to the
 * host, and the next command to fill the page cache pays the host's faults: writing 800 MiB
 * into the page cache took 1.72 s of system time after 6 s idle, and 0.15 s right after
 * another file was written and deleted. Without this, whichever command ran first after the
 * sync and the idle wait paid it, at random (qemu-img rebase: 6.7 s one run, 1.0 s the next),
 * and the ratios moved by 2-3x between runs. A machine without the balloon pays nothing for
 * this either way.
 */
function warmPageCache(): void {
  const path = join(work, 'warm')
  const chunk = Buffer.alloc(8 * MiB, 1)
  const fd = openSync(path, 'w')
  try {
    for (let written = 0; written < WARM_BYTES; written += chunk.length) writeSync(fd, chunk)
  } finally {
    closeSync(fd)
    unlinkSync(path)
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

async function sparse(path: string, size: number): Promise<void> {
  await writeFile(path, Buffer.alloc(0))
  const handle = await open(path, 'r+')
  await handle.truncate(size)
  await handle.close()
}

/** An add-cow overlay of `base` (a name beside it) with the workload's ranges written. */
async function addCowOverlay(base: string, overlay: string, workload: Workload): Promise<void> {
  await rm(overlay, { force: true })
  await rm(overlay.replace(/\.add-cow$/, '.raw'), { force: true })
  execFileSync(process.execPath, [cli, 'create', '-b', basename(base), '-F', 'raw', overlay], {
    env,
  })
  const disk = await openImage(overlay, { readOnly: false })
  try {
    for (const [index, [offset, length]] of workload.runs.entries())
      await disk.write(offset, Buffer.alloc(length, (index % 250) + 1))
  } finally {
    await disk.close()
  }
}

/** A qcow2 overlay of `base` with the same bytes written, through qemu-io. */
async function qcow2Overlay(base: string, overlay: string, workload: Workload): Promise<void> {
  await rm(overlay, { force: true })
  execFileSync('qemu-img', [
    ...['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', overlay],
    String(workload.size),
  ])
  const script = workload.runs.map(
    ([offset, length], index) => `write -P ${(index % 250) + 1} ${offset} ${length}`,
  )
  // qemu-io takes one -c per command; feed them in batches to keep the argument list short.
  for (let start = 0; start < script.length; start += 512) {
    const commands = script.slice(start, start + 512).flatMap((command) => ['-c', command])
    execFileSync('qemu-io', ['-f', 'qcow2', ...commands, overlay], { stdio: 'ignore' })
  }
}

type Times = Record<Side, { wall: number; cpu: number }[]>
const noTimes = (): Times => ({ addcow: [], before: [], qemu: [] })

function sameImages(formatA: string, a: string, formatB: string, b: string, what: string): void {
  const same = spawnSync('qemu-img', ['compare', '-q', '-f', formatA, '-F', formatB, a, b]).status
  if (same !== 0) throw new Error(`${what}: ${a} and ${b} differ afterwards`)
}

/** Commit runs of one workload: fresh sparse bases and overlays every run. */
async function benchCommit(workload: Workload): Promise<Times> {
  const times = noTimes()
  const file = (side: Side, suffix: string): string =>
    join(work, `commit-${workload.name}-${side}${suffix}`)
  for (let run = 0; run < RUNS; run++) {
    for (const side of SIDES) {
      await sparse(file(side, '-base.raw'), workload.size)
      if (side === 'qemu')
        await qcow2Overlay(file(side, '-base.raw'), file(side, '.qcow2'), workload)
      else await addCowOverlay(file(side, '-base.raw'), file(side, '.add-cow'), workload)
    }
    await rotate(run, {
      addcow: () =>
        times.addcow.push(time(process.execPath, [cli, 'commit', file('addcow', '.add-cow')])),
      before: () =>
        times.before.push(time(process.execPath, [before!, 'commit', file('before', '.add-cow')])),
      qemu: () =>
        times.qemu.push(time('qemu-img', ['commit', '-q', '-f', 'qcow2', file('qemu', '.qcow2')])),
    })
    for (const side of SIDES) {
      if (side !== 'qemu')
        sameImages('raw', file(side, '-base.raw'), 'raw', file('qemu', '-base.raw'), 'commit')
    }
  }
  return times
}

/** Stream runs of one workload: one base whose first half holds data, fresh overlays every run. */
async function benchStream(workload: Workload): Promise<Times> {
  const base = join(work, `stream-${workload.name}-base.raw`)
  await sparse(base, workload.size)
  const handle = await open(base, 'r+')
  const chunk = Buffer.alloc(8 * MiB)
  for (let offset = 0; offset < workload.size / 2; offset += chunk.length) {
    chunk.fill((offset / chunk.length) % 251)
    await handle.write(chunk, 0, chunk.length, offset)
  }
  await handle.close()
  const times = noTimes()
  const file = (side: Side, suffix: string): string =>
    join(work, `stream-${workload.name}-${side}${suffix}`)
  for (let run = 0; run < RUNS; run++) {
    for (const side of SIDES) {
      if (side === 'qemu') await qcow2Overlay(base, file(side, '.qcow2'), workload)
      else await addCowOverlay(base, file(side, '.add-cow'), workload)
    }
    await rotate(run, {
      addcow: () =>
        times.addcow.push(time(process.execPath, [cli, 'stream', file('addcow', '.add-cow')])),
      before: () =>
        times.before.push(time(process.execPath, [before!, 'stream', file('before', '.add-cow')])),
      qemu: () =>
        times.qemu.push(
          time('qemu-img', ['rebase', '-q', '-f', 'qcow2', '-b', '', file('qemu', '.qcow2')]),
        ),
    })
    for (const side of SIDES) {
      if (side !== 'qemu')
        sameImages('raw', file(side, '.raw'), 'qcow2', file('qemu', '.qcow2'), 'stream')
    }
  }
  return times
}

function report(label: string, times: Times): void {
  const wall = (side: Side): number[] => times[side].map((entry) => entry.wall)
  const cpu = (side: Side): number[] => times[side].map((entry) => entry.cpu)
  const ours = median(wall('addcow'))
  const theirs = median(wall('qemu'))
  const paired = Math.exp(
    times.addcow.reduce(
      (sum, entry, run) => sum + Math.log(entry.wall / times.qemu[run]!.wall),
      0,
    ) / times.addcow.length,
  )
  const verdict = paired <= TARGET ? `target <= ${TARGET} met` : `target <= ${TARGET} NOT met`
  console.log(
    `${label}: addcow ${ours.toFixed(0)} ms, qemu-img ${theirs.toFixed(0)} ms, ratio ${(ours / theirs).toFixed(2)}, ` +
      `paired ${paired.toFixed(2)} (${verdict}; medians of ${times.addcow.length})`,
  )
  if (before) {
    const previous = median(wall('before'))
    console.log(
      `  before: ${previous.toFixed(0)} ms, ratio ${(previous / theirs).toFixed(2)} (runs ${wall(
        'before',
      )
        .map((t) => t.toFixed(0))
        .join('/')})`,
    )
  }
  console.log(
    `  runs: addcow ${wall('addcow')
      .map((t) => t.toFixed(0))
      .join('/')}, qemu-img ${wall('qemu')
      .map((t) => t.toFixed(0))
      .join('/')} ms`,
  )
  console.log(
    `  CPU (user + system, medians): ${SIDES.map((side) => `${side} ${median(cpu(side)).toFixed(0)} ms`).join(', ')}; load ${load()}`,
  )
}

async function main(): Promise<void> {
  for (const path of [cli, before]) {
    if (path && !existsSync(path)) throw new Error(`${path} is missing: run npm run build:cli`)
  }
  console.log(
    `native addon: ${nativeStatus().loaded ? 'loaded' : `NOT loaded (${nativeStatus().reason})`}; load ${load()}`,
  )
  await rm(work, { recursive: true, force: true })
  await mkdir(work, { recursive: true })
  const startup = median([0, 1, 2].map(() => time(process.execPath, [cli, '--version']).wall))
  try {
    for (const name of (process.env.BENCH_WORKLOADS ?? 'contiguous,scattered').split(',')) {
      const workload = WORKLOADS[name]
      if (!workload) throw new Error(`unknown workload ${name}`)
      const written = workload.runs.reduce((sum, [, length]) => sum + length, 0)
      const what = `${workload.size / GiB} GiB, ${written / MiB} MiB written ${name === 'contiguous' ? 'contiguously' : 'scattered'}`
      report(`commit ${name} (${what})`, await benchCommit(workload))
      report(
        `stream ${name} (${what}, base half data) vs rebase -b ''`,
        await benchStream(workload),
      )
    }
    console.log(
      `these include Node's start-up: addcow --version takes ${startup.toFixed(0)} ms here (median of 3)`,
    )
  } finally {
    await rm(work, { recursive: true, force: true })
  }
}

await main()
