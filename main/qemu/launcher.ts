import { spawn, type ChildProcess } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { chmod, constants as fsConstants, copyFile, lstat, mkdir, rm } from 'node:fs/promises'
import { connect } from 'node:net'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { constants as osConstants } from 'node:os'
import { wholeViewFile, type Disk } from '../engine/disk'
import { EngineError, throwIfAborted } from '../engine/errors'
import type { Library } from '../engine/library'
import { makePolicy, type NamePolicy } from '../engine/names'
import { createOverlay } from '../engine/ops/create'
import { openImage } from '../engine/open'
import { defaultControlPath } from '../engine/live/control'
import type { LiveTarget } from '../engine/live/registry'
import { findFormat } from '../engine/registry'
import { imageTag } from '../engine/unix-socket'
import type { NbdLogEvent } from '../nbd/export-types'
import { startExport, type ExportHandle } from '../nbd/start-export'
import { qemuMessage, resolveAccelerator, type AcceleratorChoice } from './accelerator'
import { findQemuBinary, hostArch } from './binaries'
import { uefiVarsTemplateFor } from './capabilities'
import {
  buildQemuCommand,
  vmName,
  type QemuCommand,
  type QemuCommandOptions,
  type QemuDiskSource,
  type QemuFirmware,
  type QemuMachineOptions,
  type QemuVia,
  type UefiVariableStore,
} from './command'
import {
  POWER_COMMANDS,
  vmStateAfter,
  vmStateOfStatus,
  type PowerAction,
  type VmState,
} from './power'
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
  /**
   * The library live commands on the export consult (a live commit's blast radius) and live
   * snapshots record their new tops in.
   */
  library?: Library
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
  /**
   * The guest's screen for the app's graphical console: VNC on a Unix socket in the run folder
   * (owner-only, never TCP), reached through {@link VmHandle.vncSocket}. Ignored when headless.
   */
  inAppDisplay?: boolean
  /**
   * Run without saving changes (--via nbd): the guest writes into a throw-away add-cow overlay
   * on top of the image, in the run folder, deleted when QEMU exits. The image is not written.
   */
  discardChanges?: boolean
  /**
   * Copy-on-read (--via nbd, as `addcow serve --copy-on-read`): what the guest reads from the
   * base is copied into the overlay, so a slow or remote base warms a local overlay.
   */
  copyOnRead?: boolean
  extraArgs?: string[]
  /** Time system_powerdown gets before QMP quit (default 30 s). */
  stopTimeoutMs?: number
  /**
   * The private folder for the NBD and QMP sockets (default {@link vmRunFolder} of the image:
   * the same path every time, so the command shown before the launch is the one that runs).
   */
  runFolder?: string
  onLog?: (event: NbdLogEvent) => void
  /**
   * The control socket of the export (--via nbd) for live commands (`addcow job`); default: the
   * image's {@link defaultControlPath}, skipped with a warning when taken.
   */
  controlSocket?: string
  /** The guest's serial output from the first byte (the 'console' event starts later). */
  onConsole?: (chunk: Buffer) => void
  /** QEMU's own messages from the first byte (the 'stderr' event starts later). */
  onStderr?: (chunk: Buffer) => void
  signal?: AbortSignal
}

/**
 * A running VM. Events: 'console' (Buffer: the guest's serial output), 'stderr' (Buffer:
 * QEMU's own messages), 'qmp-event' ({@link QmpEvent}), 'state' ({@link VmState}, when it
 * changes), 'exit' ({@link VmExit}, after the export was flushed and closed).
 */
export interface VmHandle extends EventEmitter {
  readonly command: QemuCommand
  /** The accelerator QEMU runs with, and why (KVM only when a test guest ran on it). */
  readonly accelerator: AcceleratorChoice
  readonly pid: number
  /** The NBD URI QEMU uses (--via nbd), else null. */
  readonly exportUri: string | null
  /** What live operations (snapshot, ...) work on (--via nbd), else null. */
  readonly live: LiveTarget | null
  /** The export's control socket, when it has one. */
  readonly controlSocket: string | null
  /** Resolves once QEMU exited and everything was cleaned up. */
  readonly exited: Promise<VmExit>
  /** The QMP connection, once negotiated (null before, or if QEMU never offered it). */
  readonly qmp: QmpClient | null
  /** The Unix socket of the guest's screen (VNC) with an in-app display, else null. */
  readonly vncSocket: string | null
  /** Running, paused, shutting down (ACPI) or stopped, as QMP reports it. */
  readonly state: VmState
  /** Shut down (ACPI power button), pause, resume or reset through QMP; resolves with the state. */
  power(action: PowerAction): Promise<VmState>
  /** Type into the guest's serial console. */
  writeConsole(data: string | Buffer): void
  /** Power down (QMP system_powerdown), quit after the timeout, kill as a last resort. */
  stop(options?: { timeoutMs?: number }): Promise<VmExit>
  /** Pull the plug: QMP quit (QEMU flushes its disks, the guest gets no say), then SIGKILL. */
  forceOff(): Promise<VmExit>
}

/**
 * The private folder of a VM launched on `image`: in $XDG_RUNTIME_DIR or the temporary folder,
 * named after the image and a hash of its absolute path (like the default export socket), so
 * the command shown before a launch names the sockets the launch will use.
 */
export function vmRunFolder(image: string): string {
  return join(process.env.XDG_RUNTIME_DIR || tmpdir(), `addcow-vm-${imageTag(image)}`)
}

/** The sockets a launched VM uses, inside its run folder. */
export function vmSockets(runFolder: string): { nbd: string; qmp: string; vnc: string } {
  return {
    nbd: join(runFolder, 'nbd.sock'),
    qmp: join(runFolder, 'qmp.sock'),
    vnc: join(runFolder, 'vnc.sock'),
  }
}

/** The file name of a UEFI variable store, in a saved machine's folder or a run folder. */
export const UEFI_VARS_FILE = 'OVMF_VARS.fd'

/**
 * The firmware a launch runs with. UEFI without a variable store of its own (a launch that is
 * not a saved machine) gets a throw-away one in the run folder: like everything else about an
 * unsaved launch it lasts until QEMU exits, and it never lands beside the image, where it would
 * outlive the launch with nobody to delete it (and look like a raw disk to the library scan).
 */
function launchFirmware(firmware: QemuFirmware | undefined, runFolder: string): QemuFirmware {
  if (firmware?.kind !== 'uefi' || firmware.vars) return firmware ?? { kind: 'bios' }
  const template = uefiVarsTemplateFor(firmware.code)
  return template
    ? { ...firmware, vars: { file: join(runFolder, UEFI_VARS_FILE), template } }
    : firmware
}

/**
 * Give a machine its UEFI variable store: a private copy of the OVMF template (mode 0600 in a
 * 0700 folder), made once; an existing store is kept as the guest left it.
 */
export async function ensureUefiVariableStore(store: UefiVariableStore): Promise<void> {
  await mkdir(dirname(store.file), { recursive: true, mode: 0o700 })
  try {
    await copyFile(store.template, store.file, fsConstants.COPYFILE_EXCL)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return
    throw new EngineError(
      'NOT_FOUND',
      `Cannot make the UEFI variable store ${store.file} from the template ${store.template}: ${(error as Error).message}.`,
      { path: store.template, field: 'uefiVars', cause: error },
    )
  }
  await chmod(store.file, 0o600)
}

function socketAnswers(path: string): Promise<boolean> {
  return new Promise((done) => {
    const socket = connect(path)
    socket.once('connect', () => {
      socket.destroy()
      done(true)
    })
    socket.once('error', () => done(false))
  })
}

/**
 * Create the run folder with mode 0700. A folder left by a VM that is gone is emptied; one
 * that is not ours (owner, mode, a symlink) or whose QMP socket still answers is refused.
 */
async function prepareRunFolder(folder: string): Promise<void> {
  try {
    await mkdir(folder, { mode: 0o700 })
    return
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
  }
  const info = await lstat(folder)
  const uid = process.getuid?.() ?? info.uid
  if (!info.isDirectory() || info.uid !== uid || (info.mode & 0o077) !== 0) {
    throw new EngineError(
      'FORBIDDEN',
      `The VM folder ${folder} exists but is not a private folder of this user (mode ${(info.mode & 0o777).toString(8)}, owner ${info.uid}); remove it.`,
      { path: folder },
    )
  }
  if (await socketAnswers(vmSockets(folder).qmp)) {
    throw new EngineError(
      'BUSY',
      `A VM already runs from ${folder} (its QMP socket answers); stop it first.`,
      { path: folder },
    )
  }
  await rm(folder, { recursive: true, force: true })
  await mkdir(folder, { mode: 0o700 })
}

/** What {@link launchCommand} needs besides the launch options. */
export interface LaunchCommandInputs {
  binary: string
  arch: string
  accelerator: AcceleratorChoice
  /** The image's resolved path (what the export serves). */
  image: string
  /** The disk for --via native or raw (from diskSourceFor); ignored for nbd. */
  disk?: QemuDiskSource
  runFolder: string
}

/**
 * The exact command {@link launchVm} runs for these options: the IPC preview calls it with the
 * same inputs, so the line on screen is the line executed (same sockets, same order).
 */
export function launchCommand(options: LaunchOptions, inputs: LaunchCommandInputs): QemuCommand {
  return buildQemuCommand(launchCommandOptions(options, inputs))
}

/**
 * The builder's options behind {@link launchCommand}: what the shell script and the libvirt
 * domain of a launch are made from, so they describe the same machine as the line shown.
 */
export function launchCommandOptions(
  options: LaunchOptions,
  inputs: LaunchCommandInputs,
): QemuCommandOptions {
  const machine = options.machine ?? {}
  const sockets = vmSockets(inputs.runFolder)
  const via = options.via ?? 'nbd'
  assertLaunchChoices(options)
  const disk: QemuDiskSource =
    via === 'nbd'
      ? {
          via: 'nbd',
          socket: sockets.nbd,
          exportName: '',
          image: inputs.image,
          ...(options.copyOnRead ? { serveOptions: ['--copy-on-read'] } : {}),
        }
      : inputs.disk!
  return {
    ...machine,
    firmware: launchFirmware(machine.firmware, inputs.runFolder),
    arch: inputs.arch,
    binary: inputs.binary,
    accel: inputs.accelerator.accel,
    accelReason: inputs.accelerator.reason,
    disk,
    name: machine.name ?? vmName(options.image),
    readOnly: options.readOnly ?? false,
    serial: 'stdio',
    qmpSocket: sockets.qmp,
    ...(options.headless
      ? { display: 'none' }
      : machine.display !== undefined
        ? { display: machine.display }
        : {}),
    ...(options.inAppDisplay && !options.headless ? { vncSocket: sockets.vnc } : {}),
    ...(options.extraArgs && options.extraArgs.length > 0 ? { extraArgs: options.extraArgs } : {}),
  }
}

/**
 * Refuse launch choices that cannot go together (BAD_ARGUMENT naming the option): running
 * without saving changes and copy-on-read need the NBD export; copy-on-read writes the
 * overlay, so not with a read-only disk, and warming a throw-away overlay would be lost.
 */
export function assertLaunchChoices(options: LaunchOptions): void {
  const via = options.via ?? 'nbd'
  if (options.discardChanges && via !== 'nbd')
    throw new EngineError(
      'BAD_ARGUMENT',
      `Running without saving changes needs --via nbd (the throw-away overlay is served over NBD), not --via ${via}.`,
      { field: 'via', value: via },
    )
  if (!options.copyOnRead) return
  if (via !== 'nbd')
    throw new EngineError(
      'BAD_ARGUMENT',
      `Copy-on-read needs --via nbd (the export copies what the guest reads), not --via ${via}.`,
      { field: 'copy-on-read', value: via },
    )
  if (options.readOnly)
    throw new EngineError(
      'BAD_ARGUMENT',
      'Copy-on-read writes what the guest reads into the image; it cannot go with a read-only disk.',
      { field: 'copy-on-read' },
    )
  if (options.discardChanges)
    throw new EngineError(
      'BAD_ARGUMENT',
      'Copy-on-read would warm the throw-away overlay of a run without saving changes, deleted when QEMU exits; choose one.',
      { field: 'copy-on-read' },
    )
}

/** The QEMU binary for an architecture, or NOT_FOUND. */
export async function qemuBinaryFor(arch: string, binary?: string): Promise<string> {
  if (binary !== undefined) return binary
  const found = await findQemuBinary(arch)
  if (!found) {
    throw new EngineError(
      'NOT_FOUND',
      `No qemu-system-${arch} was found on PATH; install QEMU (Debian: apt-get install qemu-system-x86) or name one with --binary.`,
      { field: 'binary', value: `qemu-system-${arch}` },
    )
  }
  return found.path
}

/**
 * Check that an opened image suits a mode and return the disk source QEMU gets. `raw` needs a
 * flattened overlay (ALL_ALLOCATED) or a raw image; `native` needs an add-cow image.
 */
export function diskSourceFor(disk: Disk, via: 'native' | 'raw'): QemuDiskSource {
  if (via === 'native') {
    if (!findFormat(disk.format)?.qemuFormat) {
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
  state: VmState = 'running'
  private stopping: Promise<VmExit> | null = null
  private forcing: Promise<VmExit> | null = null
  /** QEMU's first messages, for the error when it dies before running the guest. */
  stderrText = ''
  live: LiveTarget | null = null
  controlSocket: string | null = null

  constructor(
    readonly command: QemuCommand,
    readonly accelerator: AcceleratorChoice,
    private readonly child: ChildProcess,
    readonly exportUri: string | null,
    readonly vncSocket: string | null,
    private readonly stopTimeoutMs: number,
    cleanup: () => Promise<void>,
  ) {
    super()
    this.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.exit = exitOf(code, signal)
        this.setState('stopped')
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
    child.stderr?.on('data', (chunk: Buffer) => {
      if (this.stderrText.length < 16 * 1024) this.stderrText += chunk.toString('utf8')
      this.emit('stderr', chunk)
    })
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
    client.on('event', (event: QmpEvent) => {
      this.setState(vmStateAfter(this.state, event))
      this.emit('qmp-event', event)
    })
    if (!this.running) client.close()
  }

  /** Take the state from query-status (at start, and after a command QEMU has no event for). */
  async refreshState(): Promise<VmState> {
    const status = await this.requireQmp('query-status').execute('query-status')
    // An event may have said more (shutting down) than query-status can: keep it.
    if (this.state !== 'shutting-down' || vmStateOfStatus(status) === 'paused')
      this.setState(vmStateOfStatus(status))
    return this.state
  }

  async power(action: PowerAction): Promise<VmState> {
    const command = POWER_COMMANDS[action]
    await this.requireQmp(command).execute(command)
    if (action === 'shut-down') this.setState(vmStateAfter(this.state, { event: 'POWERDOWN' }))
    // stop and cont answer after their STOP/RESUME event; a reset of a VM paused before keeps
    // it paused; query-status confirms whichever event arrived.
    return this.running ? this.refreshState() : this.state
  }

  private requireQmp(command: string): QmpClient {
    if (!this.running)
      throw new EngineError(
        'NOT_FOUND',
        `QEMU (pid ${this.pid}) has exited; cannot run ${command}.`,
        {
          value: command,
        },
      )
    const qmp = this.qmp?.connected ? this.qmp : null
    if (!qmp)
      throw new EngineError(
        'NOT_CAPABLE',
        `QEMU (pid ${this.pid}) has no working QMP connection; cannot run ${command}. Stop still works with signals.`,
        { value: command },
      )
    return qmp
  }

  private setState(state: VmState): void {
    if (state === this.state) return
    this.state = state
    this.emit('state', state)
  }

  stop(options: { timeoutMs?: number } = {}): Promise<VmExit> {
    this.stopping ??= this.stopNow(options.timeoutMs ?? this.stopTimeoutMs)
    return this.stopping
  }

  forceOff(): Promise<VmExit> {
    this.forcing ??= (async () => {
      if (this.running) {
        const qmp = this.qmp?.connected ? this.qmp : null
        if (qmp) await qmp.execute('quit').catch(() => undefined)
        else this.child.kill('SIGKILL')
        if (!(await this.waitExit(3000))) this.child.kill('SIGKILL')
      }
      return this.exited
    })()
    return this.forcing
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
  const binary = await qemuBinaryFor(arch, machine.binary)
  const accelerator = await resolveAccelerator(machine.accel ?? 'auto', arch, { binary })
  throwIfAborted(options.signal, 'launch')

  assertLaunchChoices(options)
  const runFolder = options.runFolder ?? vmRunFolder(options.image)
  const sockets = vmSockets(runFolder)
  await prepareRunFolder(runFolder)
  let exported: ExportHandle | null = null
  // Once only: the VM's exit and a failed launch may both ask for it.
  let cleaning: Promise<void> | null = null
  const cleanup = (): Promise<void> =>
    (cleaning ??= (async () => {
      let failure: unknown = null
      if (exported) await exported.stop().catch((error: unknown) => (failure = error))
      await rm(runFolder, { recursive: true, force: true }).catch(() => undefined)
      if (failure) throw failure
    })())
  try {
    let image = options.image
    let disk: QemuDiskSource | undefined
    if (via === 'nbd') {
      let served = options.image
      let policy = options.policy
      let checks = options.checks
      if (options.discardChanges) {
        // Check the image as a launch would, then put the throw-away overlay on it.
        const opened = await openImage(options.image, {
          readOnly: true,
          ...(options.format ? { format: options.format } : {}),
          ...(options.policy ? { policy: options.policy } : {}),
        })
        let format: string
        try {
          for (const check of options.checks ?? []) await check(opened)
          image = opened.path
          format = opened.format
        } finally {
          await opened.close()
        }
        served = join(runFolder, 'discard.add-cow')
        const base = options.policy ?? makePolicy({})
        policy = makePolicy({
          allowAny: base.allowAny,
          allowedPaths: [...base.allowedPaths, image, join(runFolder, 'discard.raw')],
          isTrustedPair: base.isTrustedPair,
        })
        await createOverlay({
          overlay: served,
          backing: image,
          backingFormat: format,
          image: join(runFolder, 'discard.raw'),
          policy,
        })
        checks = []
      }
      exported = await startExport({
        image: served,
        readOnly: options.readOnly ?? false,
        listen: { socket: sockets.nbd },
        ...(options.format && !options.discardChanges ? { format: options.format } : {}),
        ...(policy ? { policy } : {}),
        ...(checks ? { checks } : {}),
        ...(options.onLog ? { onLog: options.onLog } : {}),
        ...(options.signal ? { signal: options.signal } : {}),
        controlSocket: options.controlSocket ?? defaultControlPath(options.image),
        ...(options.copyOnRead ? { copyOnRead: true } : {}),
        // A throw-away overlay's snapshots are thrown away with it: nothing to record.
        ...(options.library && !options.discardChanges ? { library: options.library } : {}),
        controlOptional: options.controlSocket === undefined,
      })
      // A probed raw image: say that its first sector is guarded, as `addcow serve` does.
      for (const warning of exported.warnings) {
        options.onLog?.({ level: 'warn', connection: 0, message: warning })
      }
      if (!options.discardChanges) image = exported.disk.path
    } else {
      const opened = await openImage(options.image, {
        readOnly: true,
        ...(options.format ? { format: options.format } : {}),
        ...(options.policy ? { policy: options.policy } : {}),
      })
      try {
        for (const check of options.checks ?? []) await check(opened)
        disk = diskSourceFor(opened, via)
        image = opened.path
      } finally {
        await opened.close()
      }
    }
    throwIfAborted(options.signal, 'launch')
    const command = launchCommand(options, {
      binary,
      arch,
      accelerator,
      image,
      runFolder,
      ...(disk ? { disk } : {}),
    })
    const firmware = launchFirmware(options.machine?.firmware, runFolder)
    if (firmware.kind === 'uefi' && firmware.vars) await ensureUefiVariableStore(firmware.vars)
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
      options.inAppDisplay && !options.headless ? sockets.vnc : null,
      options.stopTimeoutMs ?? 30_000,
      cleanup,
    )
    vm.live = exported?.target ?? null
    vm.controlSocket = exported?.control?.path ?? null
    if (options.onConsole) vm.on('console', options.onConsole)
    if (options.onStderr) vm.on('stderr', options.onStderr)
    let qmpError: unknown = null
    vm.qmpSettled = QmpClient.connect(sockets.qmp, {
      timeoutMs: 30_000,
      alive: () => vm.running,
    })
      .then(async (client) => {
        vm.attachQmp(client)
        // The greeting and qmp_capabilities are answered by QMP's own thread, before the
        // machine is built; query-status is answered by the main loop, once the machine runs.
        await vm.refreshState()
      })
      .catch((error: unknown) => {
        qmpError = error
      })
    // "Started" means QEMU is up: query-status answered. QEMU that dies first never ran the
    // guest, and its own message is the error.
    let early = await Promise.race([vm.qmpSettled.then(() => null), vm.exited])
    if (early === null && qmpError !== null) {
      // QMP failed: most often QEMU is on its way out. Give its exit a moment to arrive.
      let timer: NodeJS.Timeout | undefined
      early = await Promise.race([
        vm.exited,
        new Promise<null>((resolve) => (timer = setTimeout(() => resolve(null), 5000))),
      ])
      clearTimeout(timer)
    }
    if (early !== null || !vm.running) {
      const exit = await vm.exited
      const message = qemuMessage(vm.stderrText)
      throw new EngineError(
        'IO_ERROR',
        `QEMU exited with status ${exit.status} before the guest ran${message !== '' ? `: ${message}` : ' (it printed nothing)'}.`,
        { path: command.binary, value: exit.status },
      )
    }
    if (qmpError !== null) {
      vm.emit(
        'stderr',
        Buffer.from(
          `addcow: QEMU runs, but its control socket did not answer (${qmpError instanceof Error ? qmpError.message : String(qmpError)}); Stop will use signals.\n`,
        ),
      )
    }
    return vm
  } catch (error) {
    await cleanup().catch(() => undefined)
    throw error
  }
}
