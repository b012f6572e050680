// Benchmark: start-up of the `addcow` binary (issue 15, target 5): `addcow info IMAGE` against
// `node -e 0` (the floor: Node's own start-up), target within 1.3x.
//
//   npx tsx tests/bench/cli-startup.ts [runs]
//
// The image is a small add-cow overlay on a raw base (created once, outside the timing). Each
// round runs both commands, alternating which goes first; prints the medians (of 10 rounds by
// default), their ratio, `addcow --version` beside them, and the load average before and after.
// Needs the built CLI (`npm run build:cli`). ADDCOW_BENCH_BEFORE=/path/to/other/addcow.mjs
// times another build too (say, main's) in the same rounds, for a before/after in one run.
import { execFileSync, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { childrenCpuMs, median } from '../helpers/numbers'

const RUNS = Number(process.argv[2] ?? 10)
const cli = fileURLToPath(new URL('../../out/cli/addcow.mjs', import.meta.url))
const before = process.env.ADDCOW_BENCH_BEFORE

/** CPU time (ms) of each command, summed over its runs: steadier than wall time under load. */
const cpu = new Map<string, number>()

function time(args: string[], env: NodeJS.ProcessEnv): number {
  const cpuBefore = childrenCpuMs()
  const start = performance.now()
  const result = spawnSync(process.execPath, args, { env, stdio: ['ignore', 'ignore', 'pipe'] })
  const elapsed = performance.now() - start
  const key = args[0] === '-e' ? 'node' : `${args[0]} ${args[1]}`
  cpu.set(key, (cpu.get(key) ?? 0) + childrenCpuMs() - cpuBefore)
  if (result.status !== 0)
    throw new Error(`node ${args.join(' ')} exited ${result.status}: ${result.stderr.toString()}`)
  return elapsed
}

function load(): string {
  return readFileSync('/proc/loadavg', 'utf8').trim()
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'addcow-startup-'))
  const env = { ...process.env, ADDCOW_DATA_DIR: join(dir, 'data') }
  try {
    const base = join(dir, 'base.raw')
    await writeFile(base, Buffer.alloc(1024 * 1024, 1))
    const overlay = join(dir, 'small.add-cow')
    execFileSync(process.execPath, [cli, 'create', '-b', 'base.raw', '-F', 'raw', overlay], { env })
    console.log(`load before: ${load()}`)
    const node: number[] = []
    const info: number[] = []
    const version: number[] = []
    const infoBefore: number[] = []
    // One warm-up round (page cache, compile cache), not counted.
    time(['-e', '0'], env)
    time([cli, 'info', overlay], env)
    if (before) time([before, 'info', overlay], env)
    for (let round = 0; round < RUNS; round++) {
      const steps = [
        () => node.push(time(['-e', '0'], env)),
        () => info.push(time([cli, 'info', overlay], env)),
        ...(before ? [() => infoBefore.push(time([before, 'info', overlay], env))] : []),
      ]
      if (round % 2 === 1) steps.reverse()
      for (const step of steps) step()
      version.push(time([cli, '--version'], env))
    }
    const floor = median(node)
    const ours = median(info)
    console.log(
      `start-up: addcow info ${ours.toFixed(0)} ms, addcow --version ${median(version).toFixed(0)} ms, ` +
        `node -e 0 ${floor.toFixed(0)} ms; ratio info / node ${(ours / floor).toFixed(2)} ` +
        `(target <= 1.30: ${ours / floor <= 1.3 ? 'met' : 'NOT met'}; median of ${RUNS})`,
    )
    if (before) {
      const old = median(infoBefore)
      console.log(
        `before (${before}): addcow info ${old.toFixed(0)} ms, ratio info / node ${(old / floor).toFixed(2)}`,
      )
    }
    // Warm-up runs included; every command ran RUNS + 1 times.
    const cpuOf = (key: string): number => (cpu.get(key) ?? 0) / (RUNS + 1)
    const floorCpu = cpuOf('node')
    const cpuLine = (label: string, key: string): string =>
      `${label} ${cpuOf(key).toFixed(0)} ms (${(cpuOf(key) / floorCpu).toFixed(2)}x)`
    console.log(
      `CPU (user+sys) per run: node -e 0 ${floorCpu.toFixed(0)} ms, ` +
        cpuLine('addcow info', `${cli} info`) +
        (before ? `, ${cpuLine('before: addcow info', `${before} info`)}` : ''),
    )
    console.log(`load after: ${load()}`)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

await main()
