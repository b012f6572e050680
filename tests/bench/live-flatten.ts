// Benchmark: a live flatten (issue 17 item 2) while a client does 4 KiB random writes at queue
// depth 16, against QEMU's live stream (block-stream), which is what libvirt's blockpull runs.
//
//   npx tsx tests/bench/live-flatten.ts [rounds]
//
// - addcow: `addcow serve --control-socket` (the built binary, its own process) of a 128 MiB
//   add-cow overlay on a raw base of non-zero data; the flatten is the control socket's
//   `flatten` (what `addcow job flatten` sends), followed until done.
// - peer: qemu-storage-daemon exporting a qcow2 overlay of the same base over NBD; the flatten
//   is QMP `block-stream` on the exported node, followed with query-block-jobs.
// Each round starts fresh files and servers and alternates which tool goes first. Prints the
// median time of the flatten, the writes the client got acknowledged per second during it, the
// longest wait of a write during it, the ratios (addcow / QEMU), and /proc/loadavg.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { liveJobSchema } from '../../shared/live-control'
import { liveJobStartedSchema } from '../../shared/live-copy-jobs'
import { sendControlRequest } from '../../main/engine/live/control'
import { QmpClient } from '../../main/qemu/qmp'
import { RandomWriter } from '../helpers/live-writer'
import { median } from '../helpers/numbers'

const MiB = 1024 * 1024
const SIZE = 128 * MiB
const BLOCK = 4096
const DEPTH = 16
const ROUNDS = Math.ceil(Number(process.argv[2] ?? 2) / 2) * 2
const root = fileURLToPath(new URL('../..', import.meta.url))
const work = join(root, 'tests/bench/.work/live-flatten')
const cli = join(root, 'out/cli/addcow.mjs')

interface Served {
  socket: string
  /** Flatten the served overlay; resolves when it is done. */
  flatten(): Promise<void>
  stop(): Promise<void>
}

interface Sample {
  seconds: number
  writesPerSecond: number
  longestMs: number
}

const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').trim()
const pause = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms))

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
    await pause(20)
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
    async flatten() {
      const { id } = liveJobStartedSchema.parse(await sendControlRequest(control, 'flatten'))
      for (;;) {
        const job = liveJobSchema.parse(await sendControlRequest(control, 'job-status', { id }))
        if (job.state === 'done') return
        if (job.state !== 'running') throw new Error(`flatten ${job.state}: ${job.error?.message}`)
        await pause(20)
      }
    },
    stop: () => stopProcess(child),
  }
}

async function serveQemu(folder: string): Promise<Served> {
  const base = join(folder, 'base.raw')
  await run('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-b',
    base,
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
      `driver=file,filename=${base},node-name=base-file`,
      '--blockdev',
      'driver=raw,file=base-file,node-name=base',
      '--blockdev',
      `driver=file,filename=${join(folder, 'disk.qcow2')},node-name=disk-file`,
      '--blockdev',
      'driver=qcow2,file=disk-file,backing=base,node-name=top',
      '--nbd-server',
      `addr.type=unix,addr.path=${socket}`,
      '--export',
      'type=nbd,id=export,node-name=top,name=,writable=on',
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
    async flatten() {
      await qmp.execute('block-stream', { 'job-id': 'stream', device: 'top' })
      for (;;) {
        const jobs = (await qmp.execute('query-block-jobs')) as { device: string }[]
        if (jobs.length === 0) return
        await pause(20)
      }
    },
    async stop() {
      qmp.close()
      await stopProcess(child)
    },
  }
}

/** One tool's round: fresh files, a server, the writer running through one flatten. */
async function round(name: string, serve: (folder: string) => Promise<Served>): Promise<Sample> {
  const folder = join(work, name)
  await rm(folder, { recursive: true, force: true })
  await mkdir(folder, { recursive: true })
  // Non-zero data everywhere: both tools must copy all of it.
  const base = Buffer.alloc(SIZE)
  for (let at = 0; at < SIZE; at += 4) base.writeUInt32LE((at * 2654435761) >>> 0, at)
  await writeFile(join(folder, 'base.raw'), base)
  const served = await serve(folder)
  const writer = await RandomWriter.connect(served.socket, SIZE / BLOCK, () => Buffer.alloc(BLOCK))
  writer.timed = true
  writer.start(DEPTH)
  try {
    await writer.waitFor(500)
    const before = writer.count
    const from = performance.now()
    await served.flatten()
    const to = performance.now()
    const seconds = (to - from) / 1000
    return {
      seconds,
      writesPerSecond: (writer.count - before) / seconds,
      longestMs: writer.longestWaitDuring(from, to),
    }
  } finally {
    await writer.stop().catch(() => undefined)
    writer.close()
    await served.stop()
  }
}

async function main(): Promise<void> {
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run npm run build:cli first`)
  const ours: Sample[] = []
  const theirs: Sample[] = []
  console.log(`load before: ${loadavg()}`)
  for (let index = 0; index < ROUNDS; index++) {
    const steps: [Sample[], () => Promise<Sample>][] = [
      [ours, () => round('addcow', serveAddcow)],
      [theirs, () => round('qemu', serveQemu)],
    ]
    if (index % 2 === 1) steps.reverse()
    for (const [into, step] of steps) into.push(await step())
  }
  await rm(work, { recursive: true, force: true })
  const of = (samples: Sample[], key: keyof Sample): number =>
    median(samples.map((sample) => sample[key]))
  const line = (name: string, samples: Sample[]): string =>
    `  ${name} ${of(samples, 'seconds').toFixed(2)} s, ${of(samples, 'writesPerSecond').toFixed(0)} writes/s acknowledged meanwhile, longest write wait ${of(samples, 'longestMs').toFixed(1)} ms`
  console.log(
    `live flatten of a ${SIZE / MiB} MiB overlay under a QD${DEPTH} 4 KiB random writer (${ROUNDS} rounds, medians):`,
  )
  console.log(line('addcow serve + job flatten:      ', ours))
  console.log(line('qemu-storage-daemon block-stream:', theirs))
  console.log(
    `  ratios addcow / QEMU: time ${(of(ours, 'seconds') / of(theirs, 'seconds')).toFixed(2)}, writes/s ${(of(ours, 'writesPerSecond') / of(theirs, 'writesPerSecond')).toFixed(2)}, longest wait ${(of(ours, 'longestMs') / of(theirs, 'longestMs')).toFixed(2)}`,
  )
  console.log(`load after: ${loadavg()}`)
}

await main()
