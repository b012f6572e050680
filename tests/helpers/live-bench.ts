// The harness the live-operation benchmarks share (tests/bench/live-*.ts): fresh files per
// round, an `addcow serve` or a qemu-storage-daemon export of them, a QD16 4 KiB random writer
// through the export while an operation runs, and the figures a round yields (the longest wait
// of a write, the writes acknowledged, the server's CPU time), with rounds alternating tools.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import { mkdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { sendControlRequest } from '../../main/engine/live/control'
import { QmpClient } from '../../main/qemu/qmp'
import { RandomWriter } from './live-writer'

export const MiB = 1024 * 1024
/** The writer's block and queue depth: a guest's 4 KiB random writes. */
export const BLOCK = 4096
export const DEPTH = 16

export const loadavg = (): string => readFileSync('/proc/loadavg', 'utf8').trim()
export const pause = (ms: number): Promise<void> => new Promise((done) => setTimeout(done, ms))

/** Clock ticks per second of /proc/PID/stat's times (USER_HZ, 100 on Linux). */
const TICKS_PER_SECOND = 100

/** User + system CPU seconds of process `pid` (all its threads) so far. */
export function cpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  // Fields 14 and 15 of proc(5), utime and stime; the slice starts at field 3.
  return (Number(fields[11]) + Number(fields[12])) / TICKS_PER_SECOND
}

/** A live benchmark's working folder, `tests/bench/.work/<name>`, and the CLI it runs. */
export class LiveBench {
  readonly work: string

  constructor(
    readonly root: string,
    name: string,
  ) {
    this.work = join(root, 'tests/bench/.work', name)
  }

  private get env(): NodeJS.ProcessEnv {
    return { ...process.env, ADDCOW_DATA_DIR: join(this.work, 'data') }
  }

  /** An empty folder for one tool's round. */
  async freshFolder(name: string): Promise<string> {
    const folder = join(this.work, name)
    await rm(folder, { recursive: true, force: true })
    await mkdir(folder, { recursive: true })
    return folder
  }

  async removeWork(): Promise<void> {
    await rm(this.work, { recursive: true, force: true })
  }

  /** Run a command to its end; a failure throws with its stderr. */
  run(command: string, args: string[]): Promise<void> {
    return new Promise((done, fail) => {
      const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], env: this.env })
      let stderr = ''
      child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
      child.on('exit', (code) =>
        code === 0 ? done() : fail(new Error(`${command} ${args.join(' ')}: ${stderr}`)),
      )
    })
  }

  /** Start a server process and wait until `ready` (a socket path) exists. */
  async start(command: string, args: string[], ready: string): Promise<ChildProcess> {
    const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'pipe'], env: this.env })
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

  /**
   * `addcow serve --control-socket` (the built CLI `cli`, its own process) of a new add-cow
   * overlay `disk.add-cow` on `folder`/base.raw.
   */
  async serveAddcow(folder: string, cli: string): Promise<AddcowServer> {
    const disk = join(folder, 'disk.add-cow')
    await this.run(process.execPath, [cli, 'create', '-b', 'base.raw', '-F', 'raw', disk])
    const socket = join(folder, 'nbd.sock')
    const control = join(folder, 'control.sock')
    const child = await this.start(
      process.execPath,
      [cli, 'serve', '--socket', socket, '--control-socket', control, disk],
      control,
    )
    return {
      socket,
      pid: child.pid!,
      request: (command, args) => sendControlRequest(control, command, args),
      stop: () => stopProcess(child),
    }
  }

  /**
   * qemu-storage-daemon with `blockdevs` (each a --blockdev value), exporting node `node`
   * writable over NBD on a Unix socket, with QMP on another.
   */
  async serveQemu(folder: string, blockdevs: string[], node: string): Promise<QemuServer> {
    const socket = join(folder, 'nbd.sock')
    const qmpSocket = join(folder, 'qmp.sock')
    const child = await this.start(
      'qemu-storage-daemon',
      [
        ...blockdevs.flatMap((blockdev) => ['--blockdev', blockdev]),
        '--nbd-server',
        `addr.type=unix,addr.path=${socket}`,
        '--export',
        `type=nbd,id=export,node-name=${node},name=,writable=on`,
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
      pid: child.pid!,
      qmp,
      async stop() {
        qmp.close()
        await stopProcess(child)
      },
    }
  }
}

/** A server of one round. */
export interface Server {
  socket: string
  pid: number
  stop(): Promise<void>
}

export interface AddcowServer extends Server {
  /** A control-socket request. */
  request(command: string, args?: Record<string, unknown>): Promise<unknown>
}

export interface QemuServer extends Server {
  qmp: QmpClient
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return
  const exited = new Promise((done) => child.once('exit', done))
  child.kill('SIGTERM')
  await exited
}

/** What one operation under the writer cost: figures of {@link timeUnderWriter}. */
export interface Timed<T> {
  value: T
  seconds: number
  /** Writes acknowledged per second while it ran. */
  writesPerSecond: number
  /** The longest wait of a write in flight at some point while it ran, in ms. */
  longestMs: number
  /** The longest wait of a write in the same length of time just before it (the noise floor). */
  floorMs: number
  /** The server's CPU seconds while it ran. */
  cpuSeconds: number
}

/**
 * A QD{@link DEPTH} 4 KiB random writer over the first `size` bytes of `server`'s export,
 * running from `warmWrites` acknowledged writes before the first operation until the last
 * one's end; `body` runs the operations, each through the `time` it is given.
 */
export async function underWriter<T>(
  server: Server,
  size: number,
  warmWrites: number,
  body: (time: <V>(operation: () => Promise<V>) => Promise<Timed<V>>) => Promise<T>,
): Promise<T> {
  const writer = await RandomWriter.connect(server.socket, size / BLOCK, () => Buffer.alloc(BLOCK))
  writer.timed = true
  writer.start(DEPTH)
  try {
    await writer.waitFor(warmWrites)
    return await body(async (operation) => {
      const quietFrom = performance.now()
      await writer.waitFor(500)
      const quietTo = performance.now()
      const writes = writer.count
      const cpuBefore = cpuSeconds(server.pid)
      const from = performance.now()
      const value = await operation()
      const to = performance.now()
      const cpu = cpuSeconds(server.pid) - cpuBefore
      const seconds = (to - from) / 1000
      const writesPerSecond = (writer.count - writes) / seconds
      // Writes in flight at the end finish before the wait is judged.
      await writer.waitFor(DEPTH * 2)
      return {
        value,
        seconds,
        writesPerSecond,
        longestMs: writer.longestWaitDuring(from, to),
        floorMs: writer.longestWaitDuring(Math.max(quietFrom, quietTo - (to - from)), quietTo),
        cpuSeconds: cpu,
      }
    })
  } finally {
    await writer.stop().catch(() => undefined)
    writer.close()
    await server.stop()
  }
}

/**
 * Run each tool's round `rounds` times, alternating which goes first (the first tool first in
 * even rounds), and collect each tool's samples.
 */
export async function alternating<S>(
  rounds: number,
  tools: readonly (() => Promise<S[]>)[],
): Promise<S[][]> {
  const samples = tools.map((): S[] => [])
  for (let index = 0; index < rounds; index++) {
    const order = tools.map((_, tool) => tool)
    if (index % 2 === 1) order.reverse()
    for (const tool of order) samples[tool]!.push(...(await tools[tool]!()))
  }
  return samples
}
