// Benchmark: `addcow check` of a 1 TiB sparse overlay (target: under 0.5 s), with qemu-img
// check of a 1 TiB qcow2 overlay holding the same clusters as the peer.
//
//   npx tsx tests/bench/check-1tib.ts [runs]
//
// The overlay (64 KiB clusters: a 2 MiB bitmap, 16M clusters) has 1000 clusters written at
// pseudo-random places on a 1 TiB sparse raw base with some data. The check reads the header
// and the whole bitmap, scans the image file for leaked data (SEEK_DATA), opens the chain and
// verifies the base fingerprint. Prints medians of the CLI run (including Node's start-up) and
// of the engine call alone, in wall time and in CPU time (the children's from /proc for the CLI
// and qemu-img, this process's for the engine call: load distorts CPU far less), and the load. Everything lives in a temporary folder, deleted at the end.
import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Library } from '../../main/engine/library'
import { nativeStatus } from '../../main/engine/native/index'
import { checkExitCode, checkImage } from '../../main/engine/ops/check'
import { openImage } from '../../main/engine/open'
import { childrenCpuMs, median, ownCpuMs } from '../helpers/numbers'

const TiB = 1024 ** 4
const CLUSTER = 64 * 1024
const RUNS = Number(process.argv[2] ?? 7)
const cli = fileURLToPath(new URL('../../out/cli/addcow.mjs', import.meta.url))

/** CPU milliseconds of each command's runs, in the order they ran. */
const cpu = { cli: [] as number[], engine: [] as number[], qemu: [] as number[] }

function time(
  command: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  into: number[],
  expected = 0,
): number {
  const cpuBefore = childrenCpuMs()
  const start = performance.now()
  const result = spawnSync(command, args, { env, stdio: ['ignore', 'ignore', 'pipe'] })
  const elapsed = performance.now() - start
  into.push(childrenCpuMs() - cpuBefore)
  if (result.status !== expected)
    throw new Error(
      `${command} ${args.join(' ')} exited ${result.status}: ${result.stderr.toString()}`,
    )
  return elapsed
}

async function main(): Promise<void> {
  console.log(
    `native addon: ${nativeStatus().loaded ? 'loaded' : `NOT loaded (${nativeStatus().reason})`}`,
  )
  const dir = await mkdtemp(join(tmpdir(), 'addcow-check-1tib-'))
  const env = { ...process.env, ADDCOW_DATA_DIR: join(dir, 'data') }
  try {
    const base = join(dir, 'base.raw')
    await writeFile(base, Buffer.alloc(0))
    const handle = await open(base, 'r+')
    await handle.truncate(TiB)
    for (let index = 0; index < 16; index++)
      await handle.write(Buffer.alloc(1024 * 1024, index + 1), 0, 1024 * 1024, index * (TiB / 16))
    await handle.close()
    const overlay = join(dir, 'big.add-cow')
    execFileSync(process.execPath, [cli, 'create', '-b', 'base.raw', '-F', 'raw', overlay], { env })
    const qcow2 = join(dir, 'big.qcow2')
    execFileSync('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-b',
      base,
      '-F',
      'raw',
      qcow2,
      String(TiB),
    ])
    const offsets: number[] = []
    let state = 777
    for (let index = 0; index < 1000; index++) {
      state = (state * 1103515245 + 12345) >>> 0
      offsets.push(Math.floor((state / 2 ** 32) * (TiB / CLUSTER)) * CLUSTER)
    }
    const disk = await openImage(overlay, { readOnly: false })
    for (const offset of offsets) await disk.write(offset, Buffer.alloc(CLUSTER, 0x5a))
    await disk.close()
    for (let start = 0; start < offsets.length; start += 250) {
      const commands = offsets
        .slice(start, start + 250)
        .flatMap((offset) => ['-c', `write -P 0x5a ${offset} ${CLUSTER}`])
      execFileSync('qemu-io', ['-f', 'qcow2', ...commands, qcow2], { stdio: 'ignore' })
    }

    const library = new Library(join(dir, 'data', 'library.json'))
    const first = await checkImage(overlay, { library })
    if (checkExitCode(first) !== 0)
      throw new Error(`the overlay is not clean: ${JSON.stringify(first.problems)}`)
    console.log(
      `overlay: ${first['total-clusters']} clusters, ${first['allocated-clusters']} allocated, leak scan ${first['leak-scan']}, base ${first['base-fingerprint']}`,
    )

    console.log(`load before: ${readFileSync('/proc/loadavg', 'utf8').trim()}`)
    const ours: number[] = []
    const engine: number[] = []
    const theirs: number[] = []
    for (let run = 0; run < RUNS; run++) {
      // Alternating who goes first.
      const steps = [
        () => ours.push(time(process.execPath, [cli, 'check', overlay], env, cpu.cli)),
        async () => {
          const cpuBefore = ownCpuMs()
          const start = performance.now()
          await checkImage(overlay, { library })
          engine.push(performance.now() - start)
          cpu.engine.push(ownCpuMs() - cpuBefore)
        },
        () => theirs.push(time('qemu-img', ['check', '-q', '-f', 'qcow2', qcow2], env, cpu.qemu)),
      ]
      if (run % 2 === 1) steps.reverse()
      for (const step of steps) await step()
    }
    console.log(`load after: ${readFileSync('/proc/loadavg', 'utf8').trim()}`)
    const cliMedian = median(ours)
    const qemuMedian = median(theirs)
    console.log(
      `check 1 TiB: addcow CLI ${cliMedian.toFixed(0)} ms (engine alone ${median(engine).toFixed(0)} ms), ` +
        `qemu-img check (qcow2) ${qemuMedian.toFixed(0)} ms, ratio ${(cliMedian / qemuMedian).toFixed(2)}; ` +
        `target < 500 ms: ${cliMedian < 500 ? 'met' : 'NOT met'} (median of ${RUNS})`,
    )
    console.log(
      `CPU: addcow CLI ${median(cpu.cli).toFixed(0)} ms, engine alone ${median(cpu.engine).toFixed(1)} ms, ` +
        `qemu-img check ${median(cpu.qemu).toFixed(0)} ms, ratio CLI / qemu-img ` +
        `${(median(cpu.cli) / Math.max(1, median(cpu.qemu))).toFixed(2)} (children in 10 ms ticks)`,
    )
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

await main()
