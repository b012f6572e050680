// Benchmark (issue 15 item 3): `addcow serve` (our NBD server, an add-cow overlay) against
// `qemu-nbd` serving a qcow2 overlay of the same base with the same clusters written, in one run:
//   - sequential read of the whole export with nbdcopy (each side with its own defaults: we
//     advertise multi-conn, so nbdcopy opens several connections to us, one to qemu-nbd);
//     target ours/peer >= 1.2;
//   - 4 KiB random reads at queue depth 16 with fio's nbd engine, target >= 1.5;
//   - 4 KiB random writes at queue depth 16, target >= 1.3;
// on two overlays of a 1 GiB raw base full of data: "scattered" (a quarter of the 64 KiB
// clusters written, seeded random) and "contiguous" (the first quarter of the disk written).
// Every file's data is read once first so both servers read from the page cache (its data, not
// its holes: see warm()). Each measurement runs
// several rounds, the servers alternating who goes first, and the medians are compared, as is
// the median of the per-round ratios. On two cores shared with the client (and, here, with
// other work) single runs swing widely, so it also prints each server's CPU time (user + system,
// all threads, from /proc/PID/stat) per GiB read and per I/O, and the load average, which say
// more than wall time on a busy machine.
//
// Last, the memory target: `addcow serve` of a 1 TiB overlay (sparse 1 TiB raw base, scattered
// writes) under full load for the whole time (nbdcopy reading the whole export with its 4
// connections, again each time it finishes, while fio reads 4 KiB and 1 MiB blocks at random at
// queue depth 16), peak RSS (VmHWM: the kernel's high-water mark of the process, so no peak
// between two samples is missed) against qemu-nbd under the same load; target < 150 MB. The
// peak is split into anonymous memory (heap, buffers) and file pages (the node binary's code)
// as /proc reports them at the end.
//
// Run with `npm run bench nbd-throughput` after `npm run build:cli`.
// Environment: BENCH_SIZE_MIB (default 1024), BENCH_RUNS (default 5), BENCH_FIO_SECONDS
// (default 5), BENCH_WORKLOADS (default "scattered,contiguous"; empty: only the 1 TiB part),
// BENCH_RSS_SECONDS (default 15; 0 skips the 1 TiB part). ADDCOW_BENCH_BEFORE=/path/to/other/addcow.mjs serves a third overlay
// with another build (say, main's) in the same rounds, for a before/after in one run (a copy of
// out/cli needs node_modules and main/engine/native/build/Release/ beside it, as in a checkout,
// or it fails to start or serves without its native addon). The big
// files are deleted at the end, also on failure.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, open, readFile, rm } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { BlockFile } from '../../main/engine/file'
import { dataExtentsIn } from '../../main/engine/formats/common/sparse'
import { openImage } from '../../main/engine/open'
import { createOverlay } from '../../main/engine/ops/create'
import { seededRandom as random, median } from '../helpers/numbers'

const MIB = 1024 * 1024
const GIB = 1024 * MIB
const SIZE = Number(process.env.BENCH_SIZE_MIB ?? 1024) * MIB
const RUNS = Number(process.env.BENCH_RUNS ?? 5)
const FIO_SECONDS = Number(process.env.BENCH_FIO_SECONDS ?? 5)
const RSS_SECONDS = Number(process.env.BENCH_RSS_SECONDS ?? 15)
const WORKLOADS = (process.env.BENCH_WORKLOADS ?? 'scattered,contiguous').split(',').filter(Boolean)
const CLUSTER = 64 * 1024
const ADDCOW = fileURLToPath(new URL('../../out/cli/addcow.mjs', import.meta.url))
const BEFORE = process.env.ADDCOW_BENCH_BEFORE
const TARGETS = { sequential: 1.2, randread: 1.5, randwrite: 1.3 }
const RSS_TARGET = 150e6

type Side = 'ours' | 'before' | 'peer'
const SIDES: Side[] = BEFORE ? ['ours', 'before', 'peer'] : ['ours', 'peer']
type Results = Record<Side, number[]>
type Test = keyof typeof TARGETS

function run(command: string, args: string[], input?: string): string {
  const result = spawnSync(command, args, { input, encoding: 'utf8', maxBuffer: 256 * MIB })
  if (result.status !== 0)
    throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr}${result.stdout}`)
  return result.stdout
}

function load(): string {
  return readFileSync('/proc/loadavg', 'utf8').trim()
}

async function writeBase(path: string): Promise<void> {
  const handle = await open(path, 'w')
  const chunk = Buffer.alloc(8 * MIB)
  const next = random(7)
  for (let index = 0; index < chunk.length; index += 4)
    chunk.writeUInt32LE((next() * 2 ** 32) >>> 0, index)
  for (let offset = 0; offset < SIZE; offset += chunk.length) {
    chunk.writeUInt32LE(offset / chunk.length, 0)
    await handle.write(chunk, 0, Math.min(chunk.length, SIZE - offset), offset)
  }
  await handle.close()
}

/**
 * Read the data of `path` once, skipping its holes (SEEK_DATA, through the engine's file layer),
 * so the servers start from the page cache. Not `cat`: reading a hole fills the page cache with
 * zero pages over it, and on ext4 (Linux 6.18 here) 4 KiB writes that later land in a large
 * hole read that way cost about 10 times as much, even after the hole was filled (measured
 * with a 1 GiB file, its first quarter written: 32 us against 3.6 us a write without the read).
 * No server reads the holes of its own image file, so `cat` made a state no user meets, and it
 * fell on our image file alone (a qcow2 file has no holes): the contiguous overlay's 4K random
 * writes measured 0.65-0.72 of qemu-nbd's with it.
 */
async function warm(path: string): Promise<void> {
  const file = await BlockFile.open(path, false)
  try {
    const length = await file.length()
    const extents = (await dataExtentsIn(file, 0, length)) ?? [[0, length]]
    const buffer = Buffer.allocUnsafe(8 * MIB)
    for (const [from, to] of extents) {
      for (let offset = from; offset < to; offset += buffer.length)
        await file.readAt(buffer.subarray(0, Math.min(buffer.length, to - offset)), offset)
    }
  } finally {
    await file.close()
  }
}

/** The clusters each workload writes in the overlays. */
function writtenClusters(workload: string, size: number): number[] {
  const count = size / CLUSTER
  if (workload === 'contiguous') return Array.from({ length: count / 4 }, (_, index) => index)
  if (workload !== 'scattered') throw new Error(`unknown workload ${workload}`)
  const next = random(42)
  const clusters: number[] = []
  for (let index = 0; index < count; index++) if (next() < 0.25) clusters.push(index)
  return clusters
}

/** An add-cow overlay of `base` with `clusters` written (0x5a), through the engine. */
async function addCowOverlay(path: string, base: string, clusters: number[]): Promise<void> {
  await createOverlay({ overlay: path, backing: base, backingFormat: 'raw', clusterSize: CLUSTER })
  const disk = await openImage(path, { readOnly: false })
  const data = Buffer.alloc(CLUSTER, 0x5a)
  for (const cluster of clusters) await disk.write(cluster * CLUSTER, data)
  await disk.close()
}

/** A qcow2 overlay of `base` with the same clusters written, through qemu-io. */
function qcow2Overlay(path: string, base: string, size: number, clusters: number[]): void {
  run('qemu-img', [
    ...['create', '-q', '-f', 'qcow2', '-o', `cluster_size=${CLUSTER}`],
    ...['-b', base, '-F', 'raw', path, String(size)],
  ])
  run(
    'qemu-io',
    ['-f', 'qcow2', path],
    clusters.map((cluster) => `write -q -P 0x5a ${cluster * CLUSTER} 64k`).join('\n') + '\nquit\n',
  )
}

async function waitForSocket(path: string, child: ChildProcess): Promise<void> {
  for (let attempt = 0; attempt < 200; attempt++) {
    if (child.exitCode !== null) throw new Error(`server exited with ${child.exitCode}`)
    const ok = await new Promise<boolean>((resolve) => {
      const socket = connect(path)
      socket.once('connect', () => {
        socket.destroy()
        resolve(true)
      })
      socket.once('error', () => resolve(false))
    })
    if (ok) return
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`nothing listens on ${path}`)
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return Promise.resolve()
  return new Promise((resolve) => {
    child.once('exit', () => resolve())
    child.kill('SIGTERM')
  })
}

/** The servers of one comparison: each side's process and URI. */
type Servers = Record<Side, { process: ChildProcess; uri: string }>

/** Start `addcow serve` (this build, and the one before if asked) and qemu-nbd. */
async function startServers(
  folder: string,
  images: Record<Side, string>,
  running: ChildProcess[],
): Promise<Servers> {
  const servers = {} as Servers
  for (const side of SIDES) {
    const socket = join(folder, `${side}.sock`)
    const child =
      side === 'peer'
        ? spawn(
            'qemu-nbd',
            ['-f', 'qcow2', '-t', '-e', '16', '--cache=writeback', '-k', socket, images.peer],
            // Not its stderr: it reports every client the benchmark stops as a broken pipe.
            { stdio: 'ignore' },
          )
        : spawn(
            process.execPath,
            [side === 'ours' ? ADDCOW : BEFORE!, 'serve', '--socket', socket, images[side]],
            {
              env: { ...process.env, ADDCOW_DATA_DIR: join(folder, 'data') },
              stdio: ['ignore', 'ignore', 'inherit'],
            },
          )
    running.push(child)
    await waitForSocket(socket, child)
    servers[side] = { process: child, uri: `nbd+unix:///?socket=${socket}` }
  }
  return servers
}

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100

/** CPU time (user + system, every thread) process `pid` has used so far, in milliseconds. */
function cpuMilliseconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS
}

/** Peak and current resident memory of process `pid`, and what the current is made of, in bytes. */
function memoryOf(pid: number): { rss: number; peak: number; anonymous: number; file: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name: string): number =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024
  return {
    rss: field('VmRSS'),
    peak: field('VmHWM'),
    anonymous: field('RssAnon'),
    file: field('RssFile'),
  }
}

function nbdcopySeconds(uri: string): number {
  const start = performance.now()
  run('nbdcopy', [uri, 'null:'])
  return (performance.now() - start) / 1000
}

function fioArguments(uri: string, mode: string, blockSize: string, seconds: number): string[] {
  return [
    ...['--name=bench', '--ioengine=nbd', `--uri=${uri}`, `--rw=${mode}`, `--bs=${blockSize}`],
    ...['--iodepth=16', `--runtime=${seconds}`, '--time_based', '--output-format=json'],
  ]
}

async function fioIops(
  uri: string,
  mode: 'randread' | 'randwrite',
  output: string,
  seconds = FIO_SECONDS,
): Promise<number> {
  run('fio', [...fioArguments(uri, mode, '4k', seconds), `--size=${SIZE}`, `--output=${output}`])
  const report = JSON.parse(await readFile(output, 'utf8')) as {
    jobs: { read: { iops: number }; write: { iops: number } }[]
  }
  const job = report.jobs[0]!
  return mode === 'randread' ? job.read.iops : job.write.iops
}

const fresh = (): Results => ({ ours: [], before: [], peer: [] })

/** Throughput and server CPU of one workload, printed with its targets. */
async function compare(folder: string, base: string, workload: string): Promise<void> {
  const clusters = writtenClusters(workload, SIZE)
  const images = {
    ours: join(folder, `${workload}.add-cow`),
    before: join(folder, `${workload}-before.add-cow`),
    peer: join(folder, `${workload}.qcow2`),
  }
  for (const side of SIDES) {
    if (side === 'peer') qcow2Overlay(images.peer, 'base.raw', SIZE, clusters)
    else await addCowOverlay(images[side], 'base.raw', clusters)
  }
  const files = [base, ...SIDES.map((side) => images[side])]
  for (const side of SIDES)
    if (side !== 'peer') files.push(images[side].replace(/\.add-cow$/, '.raw'))
  for (const file of files) await warm(file)

  const running: ChildProcess[] = []
  try {
    const servers = await startServers(folder, images, running)
    const pid = (side: Side): number => servers[side].process.pid!
    const results = { sequential: fresh(), randread: fresh(), randwrite: fresh() }
    // Server CPU: milliseconds per GiB read, microseconds per 4K I/O.
    const cpu = { sequential: fresh(), randread: fresh(), randwrite: fresh() }
    const fioJson = join(folder, 'fio.json')
    // Warm-up, not counted: the page cache, our JIT, both servers' caches.
    for (const side of SIDES) {
      nbdcopySeconds(servers[side].uri)
      await fioIops(servers[side].uri, 'randread', fioJson, 2)
      await fioIops(servers[side].uri, 'randwrite', fioJson, 2)
    }
    const cpuStart = Object.fromEntries(SIDES.map((side) => [side, cpuMilliseconds(pid(side))]))
    const loadStart = load()
    for (let round = 0; round < RUNS; round++) {
      // Rotate who goes first, so that no side always runs right after the same other.
      const order = SIDES.map((_, index) => SIDES[(index + round) % SIDES.length]!)
      for (const side of order) {
        const before = cpuMilliseconds(pid(side))
        results.sequential[side].push(SIZE / nbdcopySeconds(servers[side].uri) / 1e9)
        cpu.sequential[side].push(((cpuMilliseconds(pid(side)) - before) * GIB) / SIZE)
      }
      for (const mode of ['randread', 'randwrite'] as const) {
        for (const side of order) {
          const before = cpuMilliseconds(pid(side))
          const iops = await fioIops(servers[side].uri, mode, fioJson)
          results[mode][side].push(iops)
          cpu[mode][side].push(
            ((cpuMilliseconds(pid(side)) - before) * 1000) / (iops * FIO_SECONDS),
          )
        }
      }
      const last = (test: Test, side: Side, digits: number): string =>
        results[test][side].at(-1)!.toFixed(digits)
      const figures = (test: Test, digits: number): string =>
        SIDES.map((side) => last(test, side, digits)).join(' / ')
      console.log(
        `round ${round + 1}: seq ${figures('sequential', 2)} GB/s, randread ${figures('randread', 0)} IOPS, ` +
          `randwrite ${figures('randwrite', 0)} IOPS (${SIDES.join(' / ')}); load ${load()}`,
      )
    }
    const cpuTotal = Object.fromEntries(
      SIDES.map((side) => [side, (cpuMilliseconds(pid(side)) - cpuStart[side]!) / 1000]),
    )
    printResults(workload, clusters.length, results, cpu, cpuTotal, loadStart)
  } finally {
    for (const server of running) await stop(server)
    for (const side of SIDES) {
      await rm(images[side], { force: true })
      await rm(images[side].replace(/\.add-cow$/, '.raw'), { force: true })
    }
  }
}

function printResults(
  workload: string,
  written: number,
  results: Record<Test, Results>,
  cpu: Record<Test, Results>,
  cpuTotal: Record<string, number>,
  loadStart: string,
): void {
  console.log('')
  console.log(
    `${workload} overlay (${written} of ${SIZE / CLUSTER} clusters written, ${SIZE / MIB} MiB export), ` +
      `medians of ${RUNS} rounds, ours / ${BEFORE ? 'before / ' : ''}qemu-nbd:`,
  )
  const line = (name: string, unit: string, test: Test, digits: number): void => {
    const values = results[test]
    const ours = median(values.ours)
    const peerValue = median(values.peer)
    const ratio = ours / peerValue
    const paired = median(values.ours.map((value, round) => value / values.peer[round]!))
    const before = BEFORE
      ? ` (before ${median(values.before).toFixed(digits)}, ratio ${(median(values.before) / peerValue).toFixed(2)})`
      : ''
    const target = TARGETS[test]
    console.log(
      `  ${name.padEnd(28)} ${ours.toFixed(digits).padStart(8)} vs ${peerValue.toFixed(digits).padStart(8)} ${unit.padEnd(4)} ` +
        `ratio ${ratio.toFixed(2)} (paired ${paired.toFixed(2)}) ${ratio >= target ? 'ok' : 'BELOW'} target ${target}${before}`,
    )
  }
  line('sequential read (nbdcopy)', 'GB/s', 'sequential', 2)
  line('4K random read QD16 (fio)', 'IOPS', 'randread', 0)
  line('4K random write QD16 (fio)', 'IOPS', 'randwrite', 0)
  console.log(`Server CPU time, user + system, all threads (medians; lower is better):`)
  const cost = (name: string, unit: string, test: Test): void =>
    console.log(
      `  ${name.padEnd(28)} ${SIDES.map((side) => median(cpu[test][side]).toFixed(1).padStart(8)).join(' vs ')} ${unit}`,
    )
  cost('sequential read (nbdcopy)', 'ms per GiB', 'sequential')
  cost('4K random read QD16 (fio)', 'us per read', 'randread')
  cost('4K random write QD16 (fio)', 'us per write', 'randwrite')
  console.log(
    `  whole measured run: ${SIDES.map((side) => `${side} ${cpuTotal[side]!.toFixed(1)} s`).join(', ')}`,
  )
  console.log(`Load average: ${loadStart} at the start, ${load()} at the end.\n`)
}

/**
 * Peak RSS of each server on a 1 TiB overlay (sparse base, a cluster written every 64 MiB)
 * while nbdcopy reads all of it and fio reads 4 KiB and 1 MiB blocks at random.
 */
async function memoryUnderLoad(folder: string): Promise<void> {
  const size = 1024 * GIB
  const base = join(folder, 'big-base.raw')
  const handle = await open(base, 'w')
  await handle.truncate(size)
  await handle.close()
  const clusters = Array.from({ length: 16384 }, (_, index) => index * 1024)
  const images = {
    ours: join(folder, 'big.add-cow'),
    before: join(folder, 'big-before.add-cow'),
    peer: join(folder, 'big.qcow2'),
  }
  for (const side of SIDES) {
    if (side === 'peer') qcow2Overlay(images.peer, 'big-base.raw', size, clusters)
    else await addCowOverlay(images[side], 'big-base.raw', clusters)
  }
  const running: ChildProcess[] = []
  try {
    const servers = await startServers(folder, images, running)
    const loadStart = load()
    for (const side of SIDES) {
      const before = memoryOf(servers[side].process.pid!)
      const uri = servers[side].uri
      const fio = ['4k', '1m'].map((blockSize) =>
        spawn('fio', [...fioArguments(uri, 'randread', blockSize, RSS_SECONDS), `--size=${size}`], {
          stdio: 'ignore',
        }),
      )
      const deadline = performance.now() + RSS_SECONDS * 1000
      // nbdcopy finishes a sparse 1 TiB in a few seconds: start it again until the time is up,
      // so the load is full until the end.
      let copies = 0
      let copy: ChildProcess | null = null
      while (performance.now() < deadline) {
        if (copy?.exitCode !== null) {
          if (copy?.exitCode === 0) copies++
          else if (copy) throw new Error(`nbdcopy from ${side} failed with ${copy.exitCode}`)
          copy = spawn('nbdcopy', [uri, 'null:'], { stdio: 'ignore' })
        }
        if (fio.some((client) => client.exitCode !== null && client.exitCode !== 0))
          throw new Error(`fio against ${side} failed`)
        await new Promise((resolve) => setTimeout(resolve, 100))
      }
      const during = memoryOf(servers[side].process.pid!)
      for (const client of [...fio, copy!]) await stop(client)
      const mb = (bytes: number): string => `${(bytes / 1e6).toFixed(0)} MB`
      const verdict =
        side === 'peer' ? '' : during.peak < RSS_TARGET ? ' ok, target < 150 MB' : ' ABOVE 150 MB'
      console.log(
        `1 TiB overlay, ${side}: RSS ${mb(before.rss)} idle, peak ${mb(during.peak)} under load ` +
          `(at the end ${mb(during.anonymous)} anonymous + ${mb(during.file)} file; ` +
          `${copies} whole nbdcopy reads, fio 4K and 1M random reads QD16, for ${RSS_SECONDS} s)${verdict}`,
      )
    }
    console.log(`Load average: ${loadStart} at the start, ${load()} at the end.`)
  } finally {
    for (const server of running) await stop(server)
  }
}

async function main(): Promise<void> {
  for (const cli of [ADDCOW, BEFORE]) {
    if (cli && !existsSync(cli)) throw new Error(`${cli} is missing: run npm run build:cli first`)
  }
  for (const tool of ['nbdcopy', 'fio', 'qemu-nbd', 'qemu-img', 'qemu-io']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0)
      throw new Error(`${tool} is not installed`)
  }
  const folder = await mkdtemp(join(tmpdir(), 'addcow-bench-nbd-'))
  try {
    if (WORKLOADS.length > 0) {
      console.log(`Setting up a ${SIZE / MIB} MiB base in ${folder}; load ${load()} ...`)
      const base = join(folder, 'base.raw')
      await writeBase(base)
      for (const workload of WORKLOADS) await compare(folder, base, workload)
    }
    if (RSS_SECONDS > 0) await memoryUnderLoad(folder)
  } finally {
    await rm(folder, { recursive: true, force: true })
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
