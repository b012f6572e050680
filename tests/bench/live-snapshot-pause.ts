// Benchmark: the pause a client doing 4 KiB random writes at queue depth 16 sees during a live
// snapshot (issue 17 item 1; target < 50 ms), against QEMU's own live snapshot.
//
//   npx tsx tests/bench/live-snapshot-pause.ts [rounds]
//
// - addcow: `addcow serve --control-socket` (the built binary, its own process) of a 128 MiB
//   add-cow overlay on a raw base; the snapshot is `job snapshot` through the control socket.
// - peer: qemu-storage-daemon exporting a qcow2 overlay of the same size on the same base over
//   NBD; the snapshot is QMP `blockdev-snapshot-sync` (what libvirt's live external snapshot
//   runs), whose new overlay the export serves from then on.
// The client (this process) keeps 16 writes in flight over a Unix socket from before each
// snapshot until after it; the pause of a snapshot is the longest wait of any write in flight
// while the snapshot ran. Each round starts fresh files and servers, takes 3 snapshots per
// tool, and alternates which tool goes first. Prints, per tool, the pause's median and max over
// every snapshot, the noise floor (the longest wait in a window of the same length just before
// each snapshot, without one) and the pause minus the floor, the server's own figure and its
// phases, the ratio (addcow / QEMU), and /proc/loadavg. Files live in tests/bench/.work.
import { writeFile } from 'node:fs/promises'
import { existsSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { LiveSnapshotResult } from '../../shared/live-control'
import { median } from '../helpers/numbers'
import {
  alternating,
  LiveBench,
  loadavg,
  MiB,
  underWriter,
  type Timed,
} from '../helpers/live-bench'

const SIZE = 128 * MiB
const SNAPSHOTS_PER_ROUND = 3
const ROUNDS = Math.ceil(Number(process.argv[2] ?? 4) / 2) * 2
const root = fileURLToPath(new URL('../..', import.meta.url))
const bench = new LiveBench(root, 'live-snapshot')
const cli = join(root, 'out/cli/addcow.mjs')

/** One snapshot: its figures under the writer, and the server's own reply (addcow only). */
type Sample = Timed<LiveSnapshotResult | null>

async function folderWithBase(name: string): Promise<string> {
  const folder = await bench.freshFolder(name)
  await writeFile(join(folder, 'base.raw'), Buffer.alloc(SIZE, 0x42))
  return folder
}

/** {@link SNAPSHOTS_PER_ROUND} snapshots through `snapshot(index)`, each timed under the writer. */
async function snapshots<T>(
  time: (operation: () => Promise<T>) => Promise<Timed<T>>,
  snapshot: (index: number) => Promise<T>,
): Promise<Timed<T>[]> {
  const taken: Timed<T>[] = []
  for (let index = 0; index < SNAPSHOTS_PER_ROUND; index++)
    taken.push(await time(() => snapshot(index)))
  return taken
}

async function addcowRound(): Promise<Sample[]> {
  const served = await bench.serveAddcow(await folderWithBase('addcow'), cli)
  return underWriter(served, SIZE, 2000, (time) =>
    snapshots(time, async () => (await served.request('snapshot')) as LiveSnapshotResult),
  )
}

async function qemuRound(): Promise<Sample[]> {
  const folder = await folderWithBase('qemu')
  const disk = join(folder, 'disk.qcow2')
  const base = join(folder, 'base.raw')
  await bench.run('qemu-img', ['create', '-q', '-f', 'qcow2', '-b', base, '-F', 'raw', disk])
  const served = await bench.serveQemu(
    folder,
    [
      `driver=file,filename=${disk},node-name=disk-file`,
      'driver=qcow2,file=disk-file,node-name=snap0',
    ],
    'snap0',
  )
  return underWriter(served, SIZE, 2000, (time) =>
    snapshots(time, async (index) => {
      await served.qmp.execute('blockdev-snapshot-sync', {
        'node-name': `snap${index}`,
        'snapshot-file': join(folder, `snap${index + 1}.qcow2`),
        'snapshot-node-name': `snap${index + 1}`,
        format: 'qcow2',
      })
      return null
    }),
  )
}

const fixed = (value: number): string => value.toFixed(1)

/** Pause median and max, floor median, and the median of each snapshot's pause minus its floor. */
function pauses(samples: Sample[]): string {
  const pause = median(samples.map((sample) => sample.longestMs))
  const max = Math.max(...samples.map((sample) => sample.longestMs))
  const floor = median(samples.map((sample) => sample.floorMs))
  const over = median(samples.map((sample) => sample.longestMs - sample.floorMs))
  return `pause p50 ${fixed(pause)} ms, max ${fixed(max)} ms; floor without a snapshot p50 ${fixed(floor)} ms; pause minus floor p50 ${fixed(over)} ms`
}

async function main(): Promise<void> {
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run npm run build:cli first`)
  console.log(`load before: ${loadavg()}`)
  const [ours, theirs] = await alternating(ROUNDS, [addcowRound, qemuRound])
  await bench.removeWork()
  const replies = ours!.flatMap((sample) => (sample.value ? [sample.value] : []))
  const phase = (key: keyof LiveSnapshotResult['phases']): string =>
    fixed(median(replies.map((reply) => reply.phases[key])))
  console.log(
    `live snapshot pause seen by a QD16 4 KiB random writer (${ROUNDS} rounds x ${SNAPSHOTS_PER_ROUND} snapshots):`,
  )
  console.log(`  addcow serve + job snapshot:           ${pauses(ours!)}`)
  console.log(
    `    the server's count (medians): requests held ${fixed(median(replies.map((reply) => reply.pauseMs)))} ms, of which drain ${phase('drainMs')} ms, flush ${phase('flushMs')} ms, switch ${phase('switchMs')} ms`,
  )
  console.log(`  qemu-storage-daemon blockdev-snapshot: ${pauses(theirs!)}`)
  const ratio = median(ours!.map((s) => s.longestMs)) / median(theirs!.map((s) => s.longestMs))
  console.log(`  ratio addcow / qemu (pause p50): ${ratio.toFixed(2)} (target: addcow < 50 ms)`)
  console.log(`load after: ${loadavg()}`)
}

await main()
