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
// tool, and alternates which tool goes first. Prints the median pause of each, the ratio
// (addcow / QEMU), the noise floor (the longest wait in a window of the same length without
// a snapshot), the server's own figure, and /proc/loadavg. Files live in tests/bench/.work.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { LiveSnapshotResult } from '../../shared/live-control'
import { sendControlRequest } from '../../main/engine/live/control'
import { QmpClient } from '../../main/qemu/qmp'
import { RandomWriter } from '../helpers/live-writer'
import { median } from '../helpers/numbers'

const MiB = 1024 * 1024
const SIZE = 128 * MiB
const BLOCK = 4096
const DEPTH = 16
const SNAPSHOTS_PER_ROUND = 3
const ROUNDS = Math.ceil(Number(process.argv[2] ?? 4) / 2) * 2
const root = fileURLToPath(new URL('../..', import.meta.url))
const work = join(root, 'tests/bench/.work/live-snapshot')
const cli = join(root, 'out/cli/addcow.mjs')

interface Served {
  socket: string
  snapshot(index: number): Promise<number | null>
  stop(): Promise<void>
}

interface Sample {
  pauseMs: number
  floorMs: number
  serverMs: number | null
}

const phases: LiveSnapshotResult['phases'][] = []

const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').trim()

function run(command: string, args: string[]): Promise<void> {
  return new Promise((done, fail) => {
    const child = spawn(command, args, {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, ADDCOW_DATA_DIR: join(work, 'data') },
    })
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    child.on('exit', (code) =>
      code === 0 ? done() : fail(new Error(`${command} ${args.join(' ')}: ${stderr}`)),
    )
  })
}

/** Start a server process and wait until `ready` (a socket path) exists. */
async function startProcess(command: string, args: string[], ready: string): Promise<ChildProcess> {
  const child = spawn(command, args, {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, ADDCOW_DATA_DIR: join(work, 'data') },
  })
  let stderr = ''
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  const deadline = Date.now() + 30_000
  while (!existsSync(ready)) {
    if (child.exitCode !== null || Date.now() > deadline)
      throw new Error(`${command} did not start: ${stderr}`)
    await new Promise((done) => setTimeout(done, 20))
  }
  return child
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
  const exited = new Promise((done) => child.once('exit', done))
  child.kill('SIGTERM')
  await exited
}

async function serveAddcow(folder: string): Promise<Served> {
  await run(process.execPath, [
    cli,
    'create',
    '-b',
    'base.raw',
    '-F',
    'raw',
    join(folder, 'disk.add-cow'),
  ])
  const socket = join(folder, 'nbd.sock')
  const control = join(folder, 'control.sock')
  const child = await startProcess(
    process.execPath,
    [cli, 'serve', '--socket', socket, '--control-socket', control, join(folder, 'disk.add-cow')],
    control,
  )
  return {
    socket,
    async snapshot() {
      const result = (await sendControlRequest(control, 'snapshot')) as LiveSnapshotResult
      phases.push(result.phases)
      return result.pauseMs
    },
    stop: () => stopProcess(child),
  }
}

async function serveQemu(folder: string): Promise<Served> {
  await run('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-b',
    join(folder, 'base.raw'),
    '-F',
    'raw',
    join(folder, 'disk.qcow2'),
  ])
  const socket = join(folder, 'nbd.sock')
  const qmpSocket = join(folder, 'qmp.sock')
  const child = await startProcess(
    'qemu-storage-daemon',
    [
      '--blockdev',
      `driver=file,filename=${join(folder, 'disk.qcow2')},node-name=disk-file`,
      '--blockdev',
      'driver=qcow2,file=disk-file,node-name=snap0',
      '--nbd-server',
      `addr.type=unix,addr.path=${socket}`,
      '--export',
      'type=nbd,id=export,node-name=snap0,name=,writable=on',
      '--chardev',
      `socket,id=qmp,path=${qmpSocket},server=on,wait=off`,
      '--monitor',
      'chardev=qmp',
    ],
    socket,
  )
  const qmp = await QmpClient.connect(qmpSocket)
  return {
    socket,
    async snapshot(index) {
      await qmp.execute('blockdev-snapshot-sync', {
        'node-name': `snap${index}`,
        'snapshot-file': join(folder, `snap${index + 1}.qcow2`),
        'snapshot-node-name': `snap${index + 1}`,
        format: 'qcow2',
      })
      return null
    },
    async stop() {
      qmp.close()
      await stopProcess(child)
    },
  }
}

/** One tool's round: fresh files, a server, the writer, snapshots with the floor between. */
async function round(name: string, serve: (folder: string) => Promise<Served>): Promise<Sample[]> {
  const folder = join(work, name)
  await rm(folder, { recursive: true, force: true })
  await mkdir(folder, { recursive: true })
  await writeFile(join(folder, 'base.raw'), Buffer.alloc(SIZE, 0x42))
  const served = await serve(folder)
  const writer = await RandomWriter.connect(served.socket, SIZE / BLOCK, () => Buffer.alloc(BLOCK))
  writer.timed = true
  writer.start(DEPTH)
  const samples: Sample[] = []
  try {
    await writer.waitFor(2000)
    for (let index = 0; index < SNAPSHOTS_PER_ROUND; index++) {
      const quietFrom = performance.now()
      await writer.waitFor(500)
      const quietTo = performance.now()
      const from = performance.now()
      const serverMs = await served.snapshot(index)
      const to = performance.now()
      await writer.waitFor(500)
      // The floor: the same length of time without a snapshot, just before it.
      const floorMs = writer.longestWaitDuring(Math.max(quietFrom, quietTo - (to - from)), quietTo)
      samples.push({ pauseMs: writer.longestWaitDuring(from, to), floorMs, serverMs })
    }
  } finally {
    await writer.stop().catch(() => undefined)
    writer.close()
    await served.stop()
  }
  return samples
}

async function main(): Promise<void> {
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run npm run build:cli first`)
  const ours: Sample[] = []
  const theirs: Sample[] = []
  console.log(`load before: ${loadavg()}`)
  for (let index = 0; index < ROUNDS; index++) {
    const steps: [Sample[], () => Promise<Sample[]>][] = [
      [ours, () => round('addcow', serveAddcow)],
      [theirs, () => round('qemu', serveQemu)],
    ]
    if (index % 2 === 1) steps.reverse()
    for (const [into, step] of steps) into.push(...(await step()))
  }
  await rm(work, { recursive: true, force: true })
  const pause = (samples: Sample[]): number => median(samples.map((sample) => sample.pauseMs))
  const floor = (samples: Sample[]): number => median(samples.map((sample) => sample.floorMs))
  const fixed = (value: number): string => value.toFixed(1)
  console.log(
    `live snapshot pause seen by a QD${DEPTH} 4 KiB random writer (${ROUNDS} rounds x ${SNAPSHOTS_PER_ROUND} snapshots, medians):`,
  )
  console.log(
    `  addcow serve + job snapshot:           ${fixed(pause(ours))} ms (max ${fixed(Math.max(...ours.map((s) => s.pauseMs)))}; floor without a snapshot ${fixed(floor(ours))} ms; requests held ${fixed(median(ours.map((s) => s.serverMs ?? 0)))} ms by the server's count)`,
  )
  console.log(
    `    of which (medians): drain ${fixed(median(phases.map((p) => p.drainMs)))} ms, flush ${fixed(median(phases.map((p) => p.flushMs)))} ms, switch ${fixed(median(phases.map((p) => p.switchMs)))} ms`,
  )
  console.log(
    `  qemu-storage-daemon blockdev-snapshot: ${fixed(pause(theirs))} ms (max ${fixed(Math.max(...theirs.map((s) => s.pauseMs)))}; floor ${fixed(floor(theirs))} ms)`,
  )
  console.log(
    `  ratio addcow / qemu: ${(pause(ours) / pause(theirs)).toFixed(2)} (target: addcow < 50 ms)`,
  )
  console.log(`load after: ${loadavg()}`)
}

await main()
