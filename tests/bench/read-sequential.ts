// Benchmark: sequential read of a 2 GiB add-cow overlay through the engine, against
// `cat FILE > /dev/null` of a raw file of the same size, both from the page cache, in one run.
//
// The overlay sits on a 2 GiB raw base; half of its 64 KiB clusters (chosen at random, seeded)
// are allocated in its image file, so the read alternates between the image file and the base
// at cluster granularity, the worst case for the read path. The engine reads in 2 MiB requests,
// one at a time, into one reused buffer (as an NBD client or a converter would). Every file is
// read once first so that both sides read from the page cache; each side then runs several
// times, alternating, and the medians are compared (also the median of the paired per-run
// ratios, which resists other load on the machine drifting between runs). Target: >= 0.70.
//
// Run with `npm run bench read-sequential` (or `npx tsx tests/bench/read-sequential.ts`).
// Options (environment): BENCH_SIZE_MIB (default 2048), BENCH_RUNS (default 7),
// BENCH_REQUEST_KIB (default 2048). The big files are deleted at the end, also on failure.
import { spawnSync } from 'node:child_process'
import { rmSync } from 'node:fs'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { availableParallelism, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { openImage } from '../../main/engine/open'
import { createOverlay } from '../../main/engine/ops/create'
import { seededRandom as random, median } from '../helpers/numbers'

const MIB = 1024 * 1024
const SIZE = Number(process.env.BENCH_SIZE_MIB ?? 2048) * MIB
const RUNS = Number(process.env.BENCH_RUNS ?? 7)
const REQUEST = Number(process.env.BENCH_REQUEST_KIB ?? 2048) * 1024
const CLUSTER = 64 * 1024
const TARGET = 0.7

function gbPerSecond(bytes: number, milliseconds: number): string {
  return (bytes / (milliseconds / 1000) / 1e9).toFixed(2)
}

/** Write `size` bytes of non-zero pseudo-random data to a new file. */
async function writeDataFile(path: string, size: number, seed: number): Promise<void> {
  const next = random(seed)
  const block = Buffer.alloc(8 * MIB)
  for (let i = 0; i < block.length; i += 4)
    block.writeUInt32LE((Math.floor(next() * 0xffffffff) | 1) >>> 0, i)
  const handle = await open(path, 'wx')
  try {
    for (let offset = 0; offset < size; offset += block.length) {
      await handle.write(block, 0, Math.min(block.length, size - offset), offset)
    }
  } finally {
    await handle.close()
  }
}

/** Seconds in bash's `times` format (`0m0.154s`). */
function seconds(text: string): number {
  const match = /(\d+)m([\d.]+)s/.exec(text)
  return match ? Number(match[1]) * 60 + Number(match[2]) : Number.NaN
}

/** Wall time of `cat FILE > /dev/null`, and the CPU time cat used (from bash's `times`). */
function cat(path: string): { wall: number; cpu: number } {
  const started = performance.now()
  const result = spawnSync('bash', ['-c', 'cat "$1" > /dev/null && times', 'bash', path], {
    encoding: 'utf8',
  })
  const wall = performance.now() - started
  if (result.status !== 0) throw new Error(`cat ${path} failed: ${result.stderr}`)
  const children = result.stdout.trim().split('\n')[1]?.split(/\s+/) ?? []
  return { wall, cpu: (seconds(children[0] ?? '') + seconds(children[1] ?? '')) * 1000 }
}

/** Wall time of one sequential read of the overlay, and the CPU time (all threads) it used. */
async function engineRead(overlay: string, buffer: Buffer): Promise<{ wall: number; cpu: number }> {
  const started = performance.now()
  const usage = process.cpuUsage()
  const disk = await openImage(overlay, { format: 'add-cow', readOnly: true })
  try {
    for (let offset = 0; offset < disk.size; offset += buffer.length) {
      const length = Math.min(buffer.length, disk.size - offset)
      await disk.readInto(length === buffer.length ? buffer : buffer.subarray(0, length), offset)
    }
  } finally {
    await disk.close()
  }
  const wall = performance.now() - started
  const used = process.cpuUsage(usage)
  return { wall, cpu: (used.user + used.system) / 1000 }
}

async function main(): Promise<void> {
  const folder = await mkdtemp(join(tmpdir(), 'addcow-bench-'))
  // Gigabytes of scratch files: remove them on Ctrl-C too.
  process.once('SIGINT', () => {
    rmSync(folder, { recursive: true, force: true })
    process.exit(130)
  })
  try {
    const base = join(folder, 'base.raw')
    const overlay = join(folder, 'overlay.add-cow')
    console.log(`read-sequential: preparing a ${SIZE / MIB} MiB base and overlay in ${folder}`)
    await writeDataFile(base, SIZE, 1)
    await createOverlay({ overlay, backing: 'base.raw', backingFormat: 'raw' })

    // Allocate half the clusters, chosen at random, writing runs of neighbours at once.
    const pick = random(2)
    const data = Buffer.alloc(8 * MIB, 0x5a)
    const clusters = SIZE / CLUSTER
    let allocated = 0
    const writer = await openImage(overlay, { format: 'add-cow' })
    try {
      let cluster = 0
      while (cluster < clusters) {
        if (pick() < 0.5) {
          cluster++
          continue
        }
        let end = cluster + 1
        while (end < clusters && end - cluster < data.length / CLUSTER && pick() >= 0.5) end++
        await writer.write(cluster * CLUSTER, data.subarray(0, (end - cluster) * CLUSTER))
        allocated += end - cluster
        cluster = end + 1
      }
    } finally {
      await writer.close()
    }
    console.log(
      `read-sequential: ${allocated} of ${clusters} clusters allocated (${((allocated / clusters) * 100).toFixed(1)}%)`,
    )

    // Warm the page cache with every file both sides read.
    for (const path of [base, join(folder, 'overlay.raw'), overlay]) cat(path)
    const buffer = Buffer.alloc(REQUEST)
    await engineRead(overlay, buffer)

    const catTimes: number[] = []
    const engineTimes: number[] = []
    const catCpu: number[] = []
    const engineCpu: number[] = []
    for (let run = 0; run < RUNS; run++) {
      const byCat = cat(base)
      const byEngine = await engineRead(overlay, buffer)
      catTimes.push(byCat.wall)
      catCpu.push(byCat.cpu)
      engineTimes.push(byEngine.wall)
      engineCpu.push(byEngine.cpu)
      console.log(
        `  run ${run + 1}: cat ${gbPerSecond(SIZE, catTimes[run]!)} GB/s, engine ${gbPerSecond(SIZE, engineTimes[run]!)} GB/s, ` +
          `engine/cat ${(catTimes[run]! / engineTimes[run]!).toFixed(2)}`,
      )
    }
    const catMedian = median(catTimes)
    const engineMedian = median(engineTimes)
    const ratio = catMedian / engineMedian
    const paired = median(catTimes.map((time, run) => time / engineTimes[run]!))
    console.log(
      `read-sequential: median cat ${gbPerSecond(SIZE, catMedian)} GB/s, engine ${gbPerSecond(SIZE, engineMedian)} GB/s ` +
        `(${REQUEST / 1024} KiB requests); engine/cat = ${ratio.toFixed(2)}, median of paired runs ${paired.toFixed(2)} ` +
        `(target ${TARGET.toFixed(2)}: ${ratio >= TARGET ? 'met' : 'NOT met'})`,
    )
    // CPU time is what other load on the machine distorts least: the engine may spread its
    // copies over two cores, cat uses one.
    const perGiB = (milliseconds: number) => ((milliseconds / SIZE) * 1024 ** 3).toFixed(0)
    console.log(
      `read-sequential: CPU time per GiB: cat ${perGiB(median(catCpu))} ms, engine ${perGiB(median(engineCpu))} ms (all threads); ` +
        `load average ${loadavg()[0]!.toFixed(2)} on ${availableParallelism()} CPUs`,
    )
  } finally {
    await rm(folder, { recursive: true, force: true })
  }
}

await main()
