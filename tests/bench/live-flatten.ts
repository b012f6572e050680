// Benchmark: a live flatten (issue 17 item 2) while a client does 4 KiB random writes at queue
// depth 16, against QEMU's live stream (block-stream), which is what libvirt's blockpull runs.
//
//   npx tsx tests/bench/live-flatten.ts [rounds] [--before OTHER/out/cli/addcow.mjs]
//
// - addcow: `addcow serve --control-socket` (the built binary, its own process) of a 128 MiB
//   add-cow overlay on a raw base of non-zero data; the flatten is the control socket's
//   `flatten` (what `addcow job flatten` sends), followed until done.
// - peer: qemu-storage-daemon exporting a qcow2 overlay of the same base over NBD; the flatten
//   is QMP `block-stream` on the exported node, followed with query-block-jobs.
// - `--before CLI`: a second addcow build (main's, say) measured in the same rounds, so a change
//   is judged against the peer and against what it replaces in one run.
// Each round starts fresh files and servers and alternates which tool goes first. Prints the
// median time of the flatten, the server's CPU seconds for it, the writes the client got
// acknowledged per second during it, the longest wait of a write during it (and the floor: the
// longest wait just before it), the ratios (addcow / QEMU), and /proc/loadavg.
import { writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { liveJobSchema } from '../../shared/live-control'
import { liveJobStartedSchema } from '../../shared/live-copy-jobs'
import { median } from '../helpers/numbers'
import {
  alternating,
  LiveBench,
  loadavg,
  MiB,
  pause,
  underWriter,
  type Timed,
} from '../helpers/live-bench'

const SIZE = 128 * MiB
const argv = process.argv.slice(2)
const beforeAt = argv.indexOf('--before')
const beforeCli = beforeAt >= 0 ? argv.splice(beforeAt, 2)[1] : undefined
const ROUNDS = Math.ceil(Number(argv[0] ?? 2) / 2) * 2
const root = fileURLToPath(new URL('../..', import.meta.url))
const bench = new LiveBench(root, 'live-flatten')
const cli = join(root, 'out/cli/addcow.mjs')

type Sample = Timed<void>

/** A fresh folder holding base.raw: non-zero data everywhere, so both tools copy all of it. */
async function folderWithBase(name: string): Promise<string> {
  const folder = await bench.freshFolder(name)
  const base = Buffer.alloc(SIZE)
  for (let at = 0; at < SIZE; at += 4) base.writeUInt32LE((at * 2654435761) >>> 0, at)
  await writeFile(join(folder, 'base.raw'), base)
  return folder
}

async function addcowRound(name: string, binary: string): Promise<Sample[]> {
  const served = await bench.serveAddcow(await folderWithBase(name), binary)
  return underWriter(served, SIZE, 500, async (time) => [
    await time(async () => {
      const { id } = liveJobStartedSchema.parse(await served.request('flatten'))
      for (;;) {
        const job = liveJobSchema.parse(await served.request('job-status', { id }))
        if (job.state === 'done') return
        if (job.state !== 'running') throw new Error(`flatten ${job.state}: ${job.error?.message}`)
        await pause(20)
      }
    }),
  ])
}

async function qemuRound(): Promise<Sample[]> {
  const folder = await folderWithBase('qemu')
  const base = join(folder, 'base.raw')
  const disk = join(folder, 'disk.qcow2')
  await bench.run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', disk])
  const served = await bench.serveQemu(
    folder,
    [
      `driver=file,filename=${base},node-name=base-file`,
      'driver=raw,file=base-file,node-name=base',
      `driver=file,filename=${disk},node-name=disk-file`,
      'driver=qcow2,file=disk-file,backing=base,node-name=top',
    ],
    'top',
  )
  return underWriter(served, SIZE, 500, async (time) => [
    await time(async () => {
      await served.qmp.execute('block-stream', { 'job-id': 'stream', device: 'top' })
      for (;;) {
        const jobs = (await served.qmp.execute('query-block-jobs')) as unknown[]
        if (jobs.length === 0) return
        await pause(20)
      }
    }),
  ])
}

async function main(): Promise<void> {
  for (const binary of [cli, beforeCli]) {
    if (binary && !existsSync(binary)) throw new Error(`${binary} is missing: build the CLI first`)
  }
  console.log(`load before: ${loadavg()}`)
  const tools = [() => addcowRound('addcow', cli), qemuRound]
  if (beforeCli) tools.push(() => addcowRound('addcow-before', beforeCli))
  const [ours, theirs, before] = await alternating(ROUNDS, tools)
  await bench.removeWork()
  const of = (samples: Sample[], key: Exclude<keyof Sample, 'value'>): number =>
    median(samples.map((sample) => sample[key]))
  const line = (name: string, samples: Sample[]): string =>
    `  ${name} ${of(samples, 'seconds').toFixed(2)} s (server CPU ${of(samples, 'cpuSeconds').toFixed(2)} s), ${of(samples, 'writesPerSecond').toFixed(0)} writes/s acknowledged meanwhile, longest write wait ${of(samples, 'longestMs').toFixed(1)} ms (floor ${of(samples, 'floorMs').toFixed(1)} ms)`
  const ratios = (name: string, samples: Sample[]): string =>
    `  ratios ${name} / QEMU: time ${(of(samples, 'seconds') / of(theirs!, 'seconds')).toFixed(2)}, CPU ${(of(samples, 'cpuSeconds') / of(theirs!, 'cpuSeconds')).toFixed(2)}, writes/s ${(of(samples, 'writesPerSecond') / of(theirs!, 'writesPerSecond')).toFixed(2)}, longest wait ${(of(samples, 'longestMs') / of(theirs!, 'longestMs')).toFixed(2)}`
  console.log(
    `live flatten of a ${SIZE / MiB} MiB overlay under a QD16 4 KiB random writer (${ROUNDS} rounds, medians):`,
  )
  console.log(line('addcow serve + job flatten:      ', ours!))
  if (before) console.log(line('addcow before (--before):        ', before))
  console.log(line('qemu-storage-daemon block-stream:', theirs!))
  console.log(ratios('addcow', ours!))
  if (before) console.log(ratios('addcow before', before))
  console.log(`load after: ${loadavg()}`)
}

await main()
