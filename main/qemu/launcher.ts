import { spawn, type ChildProcess } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { constants as osConstants } from 'node:os'
import { wholeViewFile, type Disk } from '../engine/disk'
import { EngineError, throwIfAborted } from '../engine/errors'
import type { NamePolicy } from '../engine/names'
import { openImage } from '../engine/open'
import { findDriver } from '../engine/registry'
import type { NbdLogEvent } from '../nbd/export-types'
import { startExport, type ExportHandle } from '../nbd/start-export'
import { resolveAccelerator, type AcceleratorChoice } from './accelerator'
import { findQemuBinary, hostArch } from './binaries'
import {
  buildQemuCommand,
  vmName,
  type QemuCommand,
  type QemuDiskSource,
  type QemuMachineOptions,
  type QemuVia,
} from './command'
import { QmpClient, type QmpEvent } from './qmp'

/** How QEMU ended: its exit code or the signal that killed it, and the shell-style status. */
export interface VmExit {
  code: number | null
  signal: NodeJS.Signals | null
  /** `code`, or 128 + the signal number. */
  status: number
}

/** Options of {@link launchVm}. */
export interface LaunchOptions {
  image: string
  format?: string
  /** How QEMU reaches the disk (default nbd: an in-process export, stock QEMU). */
  via?: QemuVia
  readOnly?: boolean
  policy?: NamePolicy
  /** Checks run on the opened image before QEMU starts (the drift guard). */
  checks?: ((disk: Disk) => Promise<void>)[]
  /** Machine options; `accel` 'auto' (default) picks KVM when /dev/kvm is usable. */
  machine?: Omit<
    QemuMachineOptions,
    'accel' | 'serial' | 'qmpSocket' | 'display' | 'extraArgs' | 'readOnly'
  > & {
    accel?: 'auto' | 'kvm' | 'tcg'
    display?: string
  }
  /** No window: `-display none`. */
  headless?: boolean
  extraArgs?: string[]
  /** Time system_powerdown gets before QMP quit (default 30 s). */
  stopTimeoutMs?: number
  onLog?: (event: NbdLogEvent) => void
  signal?: AbortSignal
}

/**
 * A running VM. Events: 'console' (Buffer: the guest's serial output), 'stderr' (Buffer:
 * QEMU's own messages), 'qmp-event' ({@link QmpEvent}), 'exit' ({@link VmExit}, after the
 * export was flushed and closed).
 */
export interface VmHandle extends EventEmitter {
  readonly command: QemuCommand
  /** The accelerator QEMU runs with, and why (KVM only when a test guest ran on it). */
  readonly accelerator: AcceleratorChoice
  readonly pid: number
  /** The NBD URI QEMU uses (--via nbd), else null. */
  readonly exportUri: string | null
  /** Resolves once QEMU exited and everything was cleaned up. */
  readonly exited: Promise<VmExit>
  /** The QMP connection, once negotiated (null before, or if QEMU never offered it). */
  readonly qmp: QmpClient | null
  /** Type into the guest's serial console. */
  writeConsole(data: string | Buffer): void
  /** Power down (QMP system_powerdown), quit after the timeout, kill as a last resort. */
  stop(options?: { timeoutMs?: number }): Promise<VmExit>
}

/**
 * Check that an opened image suits a mode and return the disk source QEMU gets. `raw` needs a
 * flattened overlay (ALL_ALLOCATED) or a raw image; `native` needs an add-cow image.
 */
export function diskSourceFor(disk: Disk, via: 'native' | 'raw'): QemuDiskSource {
  if (via === 'native') {
    if (!findDriver(disk.format)?.qemuFormat) {
      throw new EngineError(
        'NOT_CAPABLE',
        `--via native runs QEMU's add-cow driver, but ${disk.path} is a ${disk.format} image; use --via raw or --via nbd.`,
        {
          path: disk.path,
          field: 'format',
          value: disk.format,
        },
      )
    }
    return { via: 'native', path: disk.path }
  }
  const whole = wholeViewFile(disk)
  if (whole) return { via: 'raw', path: whole.path }
  if (disk.dataFile && disk.markAllocated && disk.allocationCount) {
    const { allocated, total } = disk.allocationCount()
    throw new EngineError(
      'NOT_CAPABLE',
      `${disk.path} is not flattened (${total - allocated} of its ${total} clusters still come from its base), so its raw image file is not a complete disk; run 'addcow stream ${disk.path}' first, or use --via nbd.`,
      { path: disk.path, field: 'ALL_ALLOCATED', value: false },
    )
  }
  throw new EngineError(
    'NOT_CAPABLE',
    `--via raw needs a flattened add-cow overlay or a raw image; ${disk.path} is ${disk.format}.`,
    {
      path: disk.path,
      field: 'format',
      value: disk.format,
    },
  )
}

function exitOf(code: number | null, signal: NodeJS.Signals | null): VmExit {
  const number = signal ? (osConstants.signals[signal] ?? 0) : 0
  return { code, signal, status: code ?? 128 + number }
}

class RunningVm extends EventEmitter implements VmHandle {
  qmp: QmpClient | null = null
  /** Settles once the QMP connection was made or given up. */
  qmpSettled: Promise<void> = Promise.resolve()
  exited: Promise<VmExit>
  private exit: VmExit | null = null
  private stopping: Promise<VmExit> | null = null

  constructor(
    readonly command: QemuCommand,
    readonly accelerator: AcceleratorChoice,
    private readonly child: ChildProcess,
    readonly exportUri: string | null,
    private readonly stopTimeoutMs: number,
    cleanup: () => Promise<void>,
  ) {
    super()
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = exitOf(code, signal)
        this.qmp?.close()
        void cleanup()
          .catch((error: unknown) =>
            this.emit('stderr', Buffer.from(`addcow: cleanup failed: ${String(error)}\n`)),
          )
          .then(() => {
            const exit = this.exit!
            this.emit('exit', exit)
            resolve(exit)
          })
      })
    })
    child.stdout?.on('data', (chunk: Buffer) => this.emit('console', chunk))
    child.stderr?.on('data', (chunk: Buffer) => this.emit('stderr', chunk))
    child.stdin?.on('error', () => undefined)
  }

  get pid(): number {
    return this.child.pid ?? -1
  }

  get running(): boolean {
    return this.exit === null
  }

  writeConsole(data: string | Buffer): void {
    if (this.running) this.child.stdin?.write(data)
  }

  attachQmp(client: QmpClient): void {
    this.qmp = client
    client.on('event', (event: QmpEvent) => this.emit('qmp-event', event))
    if (!this.running) client.close()
  }

  stop(options: { timeoutMs?: number } = {}): Promise<VmExit> {
    this.stopping ??= this.stopNow(options.timeoutMs ?? this.stopTimeoutMs)
    return this.stopping
  }

  private async waitExit(timeoutMs: number): Promise<boolean> {
    if (!this.running) return true
    let timer: NodeJS.Timeout | undefined
    const timedOut = await Promise.race([
      this.exited.then(() => false),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs))),
    ])
    clearTimeout(timer)
    return !timedOut
  }

  private async stopNow(timeoutMs: number): Promise<VmExit> {
    if (this.running) {
      // A stop right after the start: give QMP a moment to come up rather than signalling.
      let timer: NodeJS.Timeout | undefined
      await Promise.race([
        this.qmpSettled,
        new Promise((resolve) => (timer = setTimeout(resolve, 5000))),
      ])
      clearTimeout(timer)
      const qmp = this.qmp?.connected ? this.qmp : null
      if (qmp) {
        await qmp.execute('system_powerdown').catch(() => undefined)
        if (!(await this.waitExit(timeoutMs)) && qmp.connected)
          await qmp.execute('quit').catch(() => undefined)
      } else {
        this.child.kill('SIGTERM')
      }
      if (!(await this.waitExit(5000))) {
        this.child.kill('SIGTERM')
        if (!(await this.waitExit(5000))) this.child.kill('SIGKILL')
      }
    }
    return this.exited
  }
}

/**
 * Start QEMU on an image: for --via nbd an NBD export in this process (a private Unix socket),
 * then QEMU with a QMP socket and its serial console on a pipe. When QEMU exits the export is
 * flushed and closed before 'exit' fires. The engine-level entry point of `addcow launch` and
 * of the app's launch job.
 */
export async function launchVm(options: LaunchOptions): Promise<VmHandle> {
  const via = options.via ?? 'nbd'
  const machine = options.machine ?? {}
  const arch = machine.arch ?? hostArch()
  let binary = machine.binary
  if (binary === undefined) {
    const found = await findQemuBinary(arch)
    if (!found) {
      throw new EngineError(
        'NOT_FOUND',
        `No qemu-system-${arch} was found on PATH; install QEMU (Debian: apt-get install qemu-system-x86) or name one with --binary.`,
        {
          field: 'binary',
          value: `qemu-system-${arch}`,
        },
      )
    }
    binary = found.path
  }
  const accelerator = await resolveAccelerator(machine.accel ?? 'auto', arch, { binary })
  throwIfAborted(options.signal, 'launch')

  const runDir = await mkdtemp(join(tmpdir(), 'addcow-vm-'))
  let exported: ExportHandle | null = null
  const cleanup = async (): Promise<void> => {
    let failure: unknown = null
    if (exported) await exported.stop().catch((error: unknown) => (failure = error))
    await rm(runDir, { recursive: true, force: true }).catch(() => undefined)
    if (failure) throw failure
  }
  try {
    let disk: QemuDiskSource
    if (via === 'nbd') {
      exported = await startExport({
        image: options.image,
        readOnly: options.readOnly ?? false,
        listen: { socket: join(runDir, 'nbd.sock') },
        ...(options.format ? { format: options.format } : {}),
        ...(options.policy ? { policy: options.policy } : {}),
        ...(options.checks ? { checks: options.checks } : {}),
        ...(options.onLog ? { onLog: options.onLog } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
      })
      // A probed raw image: say that its first sector is guarded, as `addcow serve` does.
      for (const warning of exported.warnings) {
        options.onLog?.({ level: 'warn', connection: 0, message: warning })
      }
      disk = {
        via: 'nbd',
        socket: join(runDir, 'nbd.sock'),
        exportName: '',
        image: exported.disk.path,
      }
    } else {
      const opened = await openImage(options.image, {
        readOnly: true,
        ...(options.format ? { format: options.format } : {}),
        ...(options.policy ? { policy: options.policy } : {}),
      })
      try {
        for (const check of options.checks ?? []) await check(opened)
        disk = diskSourceFor(opened, via)
      } finally {
        await opened.close()
      }
    }
    throwIfAborted(options.signal, 'launch')
    const qmpSocket = join(runDir, 'qmp.sock')
    const command = buildQemuCommand({
      ...machine,
      arch,
      binary,
      accel: accelerator.accel,
      accelReason: accelerator.reason,
      disk,
      name: machine.name ?? vmName(options.image),
      readOnly: options.readOnly ?? false,
      serial: 'stdio',
      qmpSocket,
      ...(options.headless
        ? { display: 'none' }
        : machine.display !== undefined
          ? { display: machine.display }
          : {}),
      ...(options.extraArgs ? { extraArgs: options.extraArgs } : {}),
    })
    const child = spawn(command.binary, command.args, { stdio: ['pipe', 'pipe', 'pipe'] })
    await new Promise<void>((resolve, reject) => {
      child.once('spawn', () => resolve())
      child.once('error', (error: NodeJS.ErrnoException) =>
        reject(
          new EngineError(
            error.code === 'ENOENT' ? 'NOT_FOUND' : 'IO_ERROR',
            `Cannot start ${command.binary}: ${error.message}.`,
            { path: command.binary, cause: error },
          ),
        ),
      )
    })
    const vm = new RunningVm(
      command,
      accelerator,
      child,
      exported?.uri ?? null,
      options.stopTimeoutMs ?? 30_000,
      cleanup,
    )
    // QMP is best effort: without it, stop() falls back to signals.
    vm.qmpSettled = QmpClient.connect(qmpSocket, { timeoutMs: 30_000, alive: () => vm.running })
      .then((client) => vm.attachQmp(client))
      .catch((error: unknown) => {
        if (vm.running)
          vm.emit(
            'stderr',
            Buffer.from(
              `addcow: no QMP connection: ${error instanceof Error ? error.message : String(error)}\n`,
            ),
          )
      })
    return vm
  } catch (error) {
    await cleanup().catch(() => undefined)
    throw error
  }
}
