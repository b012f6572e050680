// Benchmark: `addcow check` of a 1 TiB sparse overlay (target: under 0.5 s), with qemu-img
// check of a 1 TiB qcow2 overlay holding the same clusters as the peer.
//
//   npx tsx tests/bench/check-1tib.ts [runs]
//
// The overlay (64 KiB clusters: a 2 MiB bitmap, 16M clusters) has 1000 clusters written at
// pseudo-random places on a 1 TiB sparse raw base with some data. The check reads the header
// and the whole bitmap, scans the image file for leaked data (SEEK_DATA), opens the chain and
// verifies the base fingerprint. Prints medians of the CLI run (including Node's start-up) and
// of the engine call alone. Everything lives in a temporary folder, deleted at the end.
import { execFileSync, spawnSync } from 'node:child_process'
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Library } from '../../main/engine/library'
import { nativeStatus } from '../../main/engine/native/index'
import { checkExitCode, checkImage } from '../../main/engine/ops/check'
import { openImage } from '../../main/engine/open'
import { median } from '../helpers/numbers'

const TiB = 1024 ** 4
const CLUSTER = 64 * 1024
const RUNS = Number(process.argv[2] ?? 7)
const cli = fileURLToPath(new URL('../../out/cli/addcow.mjs', import.meta.url))

function time(command: string, args: string[], env: NodeJS.ProcessEnv, expected = 0): number {
  const start = performance.now()
  const result = spawnSync(command, args, { env, stdio: ['ignore', 'ignore', 'pipe'] })
  const elapsed = performance.now() - start
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

    const ours: number[] = []
    const engine: number[] = []
    const theirs: number[] = []
    for (let run = 0; run < RUNS; run++) {
      ours.push(time(process.execPath, [cli, 'check', overlay], env))
      const start = performance.now()
      await checkImage(overlay, { library })
      engine.push(performance.now() - start)
      theirs.push(time('qemu-img', ['check', '-q', '-f', 'qcow2', qcow2], env))
    }
    const cliMedian = median(ours)
    const qemuMedian = median(theirs)
    console.log(
      `check 1 TiB: addcow CLI ${cliMedian.toFixed(0)} ms (engine alone ${median(engine).toFixed(0)} ms), ` +
        `qemu-img check (qcow2) ${qemuMedian.toFixed(0)} ms, ratio ${(cliMedian / qemuMedian).toFixed(2)}; ` +
        `target < 500 ms: ${cliMedian < 500 ? 'met' : 'NOT met'} (median of ${RUNS})`,
    )
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

await main()
