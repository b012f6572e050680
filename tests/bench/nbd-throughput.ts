// Benchmark: `addcow serve` (our NBD server, an add-cow overlay) against `qemu-nbd` serving a
// qcow2 overlay of the same base with the same clusters written, in one run:
//   - sequential read of the whole export with nbdcopy (each side with its own defaults: we
//     advertise multi-conn, so nbdcopy opens several connections to us, one to qemu-nbd);
//   - 4 KiB random reads and random writes at queue depth 16 with fio's nbd engine.
//
// The base is a 2 GiB raw file full of data; a quarter of the 64 KiB clusters (seeded random)
// are written in both overlays. Every file is read once first so both servers read from the
// page cache. Each measurement runs several times, the two servers alternating, and the
// medians are compared, as is the median of the per-round ratios. Target: ours/peer >= 1.0 in
// each test. With the client and both servers on two cores the single runs swing widely, so
// it also prints each server's CPU time (all threads, from /proc) per GiB read and per I/O,
// which depends far less on what else the machine runs.
//
// Run with `npx tsx tests/bench/nbd-throughput.ts` after `npm run build:cli`.
// Environment: BENCH_SIZE_MIB (default 2048), BENCH_RUNS (default 5), BENCH_FIO_SECONDS
// (default 5). The big files are deleted at the end, also on failure.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, open, readFile, rm } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { openImage } from '../../main/engine/open'
import { createOverlay } from '../../main/engine/ops/create'
import { seededRandom as random, median } from '../helpers/numbers'

const MIB = 1024 * 1024
const SIZE = Number(process.env.BENCH_SIZE_MIB ?? 2048) * MIB
const RUNS = Number(process.env.BENCH_RUNS ?? 5)
const FIO_SECONDS = Number(process.env.BENCH_FIO_SECONDS ?? 5)
const CLUSTER = 64 * 1024
const ADDCOW = fileURLToPath(new URL('../../out/cli/addcow.mjs', import.meta.url))

function run(command: string, args: string[], input?: string): string {
  const result = spawnSync(command, args, { input, encoding: 'utf8', maxBuffer: 256 * MIB })
  if (result.status !== 0)
    throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr}${result.stdout}`)
  return result.stdout
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

const CLOCK_TICKS = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout) || 100

/** CPU time (user + system, every thread) process `pid` has used so far, in milliseconds. */
function cpuMilliseconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS
}

function nbdcopySeconds(uri: string): number {
  const start = performance.now()
  run('nbdcopy', [uri, 'null:'])
  return (performance.now() - start) / 1000
}

async function fioIops(
  uri: string,
  mode: 'randread' | 'randwrite',
  output: string,
  seconds = FIO_SECONDS,
): Promise<number> {
  run('fio', [
    '--name=bench',
    '--ioengine=nbd',
    `--uri=${uri}`,
    `--rw=${mode}`,
    '--bs=4k',
    '--iodepth=16',
    `--runtime=${seconds}`,
    '--time_based',
    `--size=${SIZE}`,
    '--output-format=json',
    `--output=${output}`,
  ])
  const report = JSON.parse(await readFile(output, 'utf8')) as {
    jobs: { read: { iops: number }; write: { iops: number } }[]
  }
  const job = report.jobs[0]!
  return mode === 'randread' ? job.read.iops : job.write.iops
}

async function main(): Promise<void> {
  if (!existsSync(ADDCOW)) throw new Error(`${ADDCOW} is missing: run npm run build:cli first`)
  for (const tool of ['nbdcopy', 'fio', 'qemu-nbd', 'qemu-img', 'qemu-io']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0)
      throw new Error(`${tool} is not installed`)
  }
  const folder = await mkdtemp(join(tmpdir(), 'addcow-bench-nbd-'))
  const servers: ChildProcess[] = []
  try {
    console.log(`Setting up a ${SIZE / MIB} MiB base and two overlays in ${folder} ...`)
    const base = join(folder, 'base.raw')
    await writeBase(base)
    const ours = join(folder, 'overlay.add-cow')
    const peer = join(folder, 'overlay.qcow2')
    await createOverlay({
      overlay: ours,
      backing: 'base.raw',
      backingFormat: 'raw',
      clusterSize: CLUSTER,
    })
    run('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-o',
      `cluster_size=${CLUSTER}`,
      '-b',
      'base.raw',
      '-F',
      'raw',
      peer,
    ])

    const next = random(42)
    const clusters: number[] = []
    for (let index = 0; index < SIZE / CLUSTER; index++) if (next() < 0.25) clusters.push(index)
    const disk = await openImage(ours, { readOnly: false })
    const data = Buffer.alloc(CLUSTER, 0x5a)
    for (const cluster of clusters) await disk.write(cluster * CLUSTER, data)
    await disk.close()
    run(
      'qemu-io',
      ['-f', 'qcow2', peer],
      clusters.map((cluster) => `write -q -P 0x5a ${cluster * CLUSTER} 64k`).join('\n') +
        '\nquit\n',
    )
    for (const file of [base, join(folder, 'overlay.raw'), ours, peer])
      run('sh', ['-c', 'cat "$1" > /dev/null', 'sh', file])
    console.log(`${clusters.length} of ${SIZE / CLUSTER} clusters written in each overlay.`)

    const ourSocket = join(folder, 'addcow.sock')
    const peerSocket = join(folder, 'qemu-nbd.sock')
    const ourServer = spawn(process.execPath, [ADDCOW, 'serve', '--socket', ourSocket, ours], {
      env: { ...process.env, ADDCOW_DATA_DIR: join(folder, 'data') },
      stdio: ['ignore', 'ignore', 'inherit'],
    })
    const peerServer = spawn(
      'qemu-nbd',
      ['-f', 'qcow2', '-t', '-e', '16', '--cache=writeback', '-k', peerSocket, peer],
      {
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    )
    servers.push(ourServer, peerServer)
    await waitForSocket(ourSocket, ourServer)
    await waitForSocket(peerSocket, peerServer)
    const uri = {
      ours: `nbd+unix:///?socket=${ourSocket}`,
      peer: `nbd+unix:///?socket=${peerSocket}`,
    }

    const pids = { ours: ourServer.pid!, peer: peerServer.pid! }
    type Results = { ours: number[]; peer: number[] }
    const fresh = (): Results => ({ ours: [], peer: [] })
    const results = { sequential: fresh(), randread: fresh(), randwrite: fresh() }
    // Server CPU: milliseconds per GiB read, microseconds per 4K I/O.
    const cpu = { sequential: fresh(), randread: fresh(), randwrite: fresh() }
    // Warm-up, not counted: the page cache, our JIT, both servers' caches.
    for (const side of ['ours', 'peer'] as const) {
      nbdcopySeconds(uri[side])
      await fioIops(uri[side], 'randread', join(folder, 'fio.json'), 2)
      await fioIops(uri[side], 'randwrite', join(folder, 'fio.json'), 2)
    }
    for (let round = 0; round < RUNS; round++) {
      const order = round % 2 === 0 ? (['ours', 'peer'] as const) : (['peer', 'ours'] as const)
      for (const side of order) {
        const before = cpuMilliseconds(pids[side])
        results.sequential[side].push(SIZE / nbdcopySeconds(uri[side]) / 1e9)
        cpu.sequential[side].push(((cpuMilliseconds(pids[side]) - before) * 1024 ** 3) / SIZE)
      }
      for (const mode of ['randread', 'randwrite'] as const) {
        for (const side of order) {
          const before = cpuMilliseconds(pids[side])
          const iops = await fioIops(uri[side], mode, join(folder, 'fio.json'))
          results[mode][side].push(iops)
          cpu[mode][side].push(
            ((cpuMilliseconds(pids[side]) - before) * 1000) / (iops * FIO_SECONDS),
          )
        }
      }
      console.log(
        `round ${round + 1}: seq ${results.sequential.ours.at(-1)!.toFixed(2)} / ${results.sequential.peer.at(-1)!.toFixed(2)} GB/s, ` +
          `randread ${Math.round(results.randread.ours.at(-1)!)} / ${Math.round(results.randread.peer.at(-1)!)} IOPS, ` +
          `randwrite ${Math.round(results.randwrite.ours.at(-1)!)} / ${Math.round(results.randwrite.peer.at(-1)!)} IOPS (ours / qemu-nbd)`,
      )
    }
    console.log('')
    console.log(`Medians of ${RUNS} runs (addcow serve vs qemu-nbd, ${SIZE / MIB} MiB export):`)
    const line = (name: string, unit: string, values: Results, digits: number): void => {
      const ours = median(values.ours)
      const peerValue = median(values.peer)
      const ratio = ours / peerValue
      const paired = median(values.ours.map((value, round) => value / values.peer[round]!))
      console.log(
        `  ${name.padEnd(30)} ${ours.toFixed(digits).padStart(9)} vs ${peerValue.toFixed(digits).padStart(9)} ${unit.padEnd(5)} ` +
          `ratio ${ratio.toFixed(2)} (paired ${paired.toFixed(2)}) ${ratio >= 1 ? 'ok' : 'BELOW TARGET 1.0'}`,
      )
    }
    line('sequential read (nbdcopy)', 'GB/s', results.sequential, 2)
    line('4K random read QD16 (fio)', 'IOPS', results.randread, 0)
    line('4K random write QD16 (fio)', 'IOPS', results.randwrite, 0)
    console.log('Server CPU time, all threads (medians; lower is better):')
    const cost = (name: string, unit: string, values: Results): void =>
      console.log(
        `  ${name.padEnd(30)} ${median(values.ours).toFixed(1).padStart(9)} vs ${median(values.peer).toFixed(1).padStart(9)} ${unit}`,
      )
    cost('sequential read (nbdcopy)', 'ms per GiB', cpu.sequential)
    cost('4K random read QD16 (fio)', 'us per read', cpu.randread)
    cost('4K random write QD16 (fio)', 'us per write', cpu.randwrite)
  } finally {
    for (const server of servers) await stop(server)
    await rm(folder, { recursive: true, force: true })
  }
}

main().catch((error: unknown) => {
  console.error(error)
  process.exitCode = 1
})
