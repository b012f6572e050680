import { StringDecoder } from 'node:string_decoder'
import { appendConsole, type ConsoleChunk } from '../../shared/console-backlog'
import { EngineError } from '../engine/errors'
import { openImage } from '../engine/open'
import '../engine/live/commands'
import { runLiveCommand } from '../engine/live/registry'
import { guardBaseDrift } from '../engine/ops/drift'
import { resolveAccelerator } from '../qemu/accelerator'
import { findQemuBinary, hostArch } from '../qemu/binaries'
import { buildQemuCommand, type QemuCommandOptions, type QemuDiskSource } from '../qemu/command'
import {
  diskSourceFor,
  launchCommandOptions,
  launchVm,
  vmRunFolder,
  type LaunchOptions,
  type VmHandle,
} from '../qemu/launcher'
import type { VmState } from '../qemu/power'
import type { JobChannel, JobResultOf, ResponseOf } from '../../shared/ipc/contract'
import { liveSnapshotResultSchema, type LiveSnapshotResult } from '../../shared/live-control'
import type { JobRun } from './jobs'
import type { IpcServices } from './services'
import { stopSession } from './sessions'

// What the qemu and machines areas share: a VM is a job (a launch on an image, or a saved
// machine's start) that runs until QEMU exits, and both are stopped, typed into and described
// the same way. The command line shown for either is built by the launch's own function
// (launchCommand) with the same inputs, so it is the line that runs.

/** Time a stopping VM gets to power down through ACPI before it is told to quit. */
const DEFAULT_VM_STOP_TIMEOUT_MS = 15_000

/** The job channels whose job is a running VM. */
export const VM_CHANNELS = ['qemu:launch-vm', 'machines:start-machine'] as const

/** Consoles kept of VMs that ended, newest last (a page reloaded after the VM stopped). */
const ENDED_CONSOLES_KEPT = 16

/** The VMs of the running VM jobs, by job id, and the saved machine each one runs. */
export class VmSessions {
  private readonly machineJobs = new Map<string, string>()
  /** Each VM job's console text (the last 256 KiB, shared/console-backlog.ts) and its size. */
  private readonly consoles = new Map<string, { chunks: ConsoleChunk[]; size: number }>()
  /** Each VM job's last change of top being saved (see topChanged); never rejects. */
  private readonly followingTop = new Map<string, Promise<void>>()

  /**
   * `vms` is the services' map of running VMs, shared with the transports that bridge a VM's
   * screen (only VMs this app started are in it).
   */
  constructor(private readonly vms: Map<string, VmHandle>) {}

  /** The VM of a job, or NOT_FOUND. */
  get(jobId: string): VmHandle {
    const vm = this.vms.get(jobId)
    if (!vm)
      throw new EngineError('NOT_FOUND', `There is no running VM for job ${jobId}.`, {
        field: 'jobId',
        value: jobId,
      })
    return vm
  }

  /**
   * What the VM of job `jobId` printed so far (serial console and QEMU's messages, the last
   * 256 KiB, shared/console-backlog.ts) and its run state (null once it ended), for a page that
   * opens on it after it started; NOT_FOUND for a job that ran no VM here.
   */
  console(jobId: string): { chunks: ConsoleChunk[]; state: VmState | null } {
    const kept = this.consoles.get(jobId)
    if (!kept) {
      throw new EngineError('NOT_FOUND', `There is no VM console for job ${jobId}.`, {
        field: 'jobId',
        value: jobId,
      })
    }
    return {
      chunks: kept.chunks.map((chunk) => ({ ...chunk })),
      state: this.vms.get(jobId)?.state ?? null,
    }
  }

  /** The job running the saved machine `name`, or null. */
  jobOfMachine(name: string): string | null {
    return this.machineJobs.get(name) ?? null
  }

  /** Say that `machine` runs in job `jobId` (until {@link VmSessions.run} ends). */
  claimMachine(name: string, jobId: string): void {
    const running = this.machineJobs.get(name)
    if (running !== undefined)
      throw new EngineError(
        'BUSY',
        `The machine '${name}' already runs (job ${running}); stop it first.`,
        { field: 'name', value: name },
      )
    this.machineJobs.set(name, jobId)
  }

  /** Forget that a machine runs (its job ended). */
  releaseMachine(name: string, jobId: string): void {
    if (this.machineJobs.get(name) === jobId) this.machineJobs.delete(name)
  }

  /**
   * Run a VM as the job `job`: QEMU's console and messages become `qemu:console-output`
   * events, the job's detail line says QEMU's pid and NBD URI, cancelling the job stops the VM,
   * and the job ends when QEMU exits. The name policy and the base drift guard are the app's.
   */
  async run(
    services: IpcServices,
    job: JobRun,
    options: LaunchOptions,
    acceptBase: boolean,
  ): Promise<JobResultOf<'qemu:launch-vm'>> {
    const { library, bus } = services
    const kept = { chunks: [] as ConsoleChunk[], size: 0 }
    this.consoles.set(job.id, kept)
    // The consoles of ended VMs, oldest first: the newest ENDED_CONSOLES_KEPT stay.
    const ended = [...this.consoles.keys()].filter((id) => id !== job.id && !this.vms.has(id))
    for (const id of ended.slice(0, Math.max(0, ended.length - ENDED_CONSOLES_KEPT)))
      this.consoles.delete(id)
    const forward = (stream: 'serial' | 'stderr') => {
      const decoder = new StringDecoder('utf8')
      return (chunk: Buffer): void => {
        const text = decoder.write(chunk)
        if (text === '') return
        kept.size = appendConsole(kept.chunks, kept.size, stream, text)
        bus.emit('qemu:console-output', { sessionId: job.id, stream, text })
      }
    }
    const vm = await launchVm({
      ...options,
      onConsole: forward('serial'),
      onStderr: forward('stderr'),
      policy: await library.policy(),
      // Live commands on the export consult it (a live commit's blast radius and the base
      // fingerprint it drops, a snapshot's new top), as they do for `addcow launch`.
      library,
      checks: [
        async (disk) => {
          await guardBaseDrift(disk, { library, acceptBase, doing: 'run it' })
        },
      ],
      stopTimeoutMs: services.vmStopTimeoutMs ?? DEFAULT_VM_STOP_TIMEOUT_MS,
      signal: job.signal,
    })
    this.vms.set(job.id, vm)
    const stopFollowing = vm.live?.live.onSwap((next, previous) =>
      this.topChanged(services, job.id, previous.path, next.path),
    )
    const onState = (state: VmState): void =>
      bus.emit('qemu:vm-state', { sessionId: job.id, state, screen: vm.vncSocket !== null })
    vm.on('state', onState)
    onState(vm.state)
    job.describe(`QEMU pid ${vm.pid}${vm.exportUri ? ` · ${vm.exportUri}` : ''}`)
    const onAbort = (): void => {
      void vm.stop().catch(() => undefined)
    }
    job.signal.addEventListener('abort', onAbort, { once: true })
    try {
      const exit = await vm.exited
      return {
        exit: { code: exit.code, signal: exit.signal, status: exit.status },
        command: vm.command.rendering,
      }
    } finally {
      job.signal.removeEventListener('abort', onAbort)
      vm.off('state', onState)
      stopFollowing?.()
      this.vms.delete(job.id)
      this.followingTop.delete(job.id)
    }
  }

  /**
   * A live snapshot of a VM job's disk: the `snapshot` command of the export's control socket
   * (what `addcow job snapshot` sends to a CLI launch), run here on the export the VM uses. A
   * saved machine's disk becomes the new top, as libvirt's external snapshots repoint the
   * domain's disk: its next start goes on from what the guest wrote, not from the frozen layer.
   */
  async snapshot(
    services: IpcServices,
    jobId: string,
    name: string | undefined,
    job: JobRun,
  ): Promise<LiveSnapshotResult> {
    const vm = this.get(jobId)
    if (!vm.live)
      throw new EngineError(
        'NOT_CAPABLE',
        `The VM of job ${jobId} does not run through the app's NBD export (${vm.command.via}), so its disk cannot be snapshotted live.`,
        { field: 'jobId', value: jobId },
      )
    job.progress(0, 1)
    job.describe(`Freezing ${vm.live.live.current.path}`)
    const result = liveSnapshotResultSchema.parse(
      await runLiveCommand('snapshot', name !== undefined ? { name } : {}, vm.live),
    )
    // The snapshot recorded the new top in the library (the export's library is this one), as
    // `addcow create` records an overlay; the views are told it was created.
    services.bus.emit('library:changed', { reason: 'created', paths: [result.top] })
    // The swap already named the new top in the launch job; a saved machine's disk follows.
    await this.followingTop.get(jobId)
    job.progress(1, 1)
    job.describe(`New top ${result.top}, guest paused ${result.pauseMs.toFixed(1)} ms`)
    return result
  }

  /**
   * The export of VM job `jobId` serves `top` now instead of `previous`: a live snapshot's new
   * top, or the base once an active commit ends, whether the app ran it or `addcow job` did on
   * the export's control socket. A launch job names the image served now, so the Launch page
   * of that image finds its VM after a reload; a saved machine's disk is repointed, as
   * libvirt's external snapshots repoint the domain's disk, so its next start goes on from what
   * the guest wrote. Called inside the swap's quiesce: the saving runs after it (a snapshot
   * from the app waits for it through `followingTop`).
   */
  private topChanged(services: IpcServices, jobId: string, previous: string, top: string): void {
    const machine = this.machineOf(jobId)
    if (machine === undefined) services.jobs.setImage(jobId, top)
    const before = this.followingTop.get(jobId) ?? Promise.resolve()
    const saving = before.then(async () => {
      if (machine !== undefined) {
        const saved = await services.library.machine(machine)
        if (saved.disk === previous)
          await services.library.saveMachine({ ...saved, disk: top }, { replace: true })
      }
      services.bus.emit('library:changed', { reason: 'modified', paths: [previous, top] })
    })
    // A machine that cannot be saved keeps its old disk, as it was before this swap.
    this.followingTop.set(
      jobId,
      saving.catch(() => undefined),
    )
  }

  /** The saved machine job `jobId` runs, if it runs one. */
  private machineOf(jobId: string): string | undefined {
    return [...this.machineJobs].find(([, running]) => running === jobId)?.[0]
  }

  /** Stop a VM job (ACPI, then quit, then kill), or with `force` pull the plug. */
  stop(services: IpcServices, jobId: string, force: boolean): { stopping: boolean } {
    const channel = services.jobs.get(jobId)?.channel
    const vmChannel: JobChannel = VM_CHANNELS.find((known) => known === channel) ?? 'qemu:launch-vm'
    const result = stopSession(services.jobs, jobId, vmChannel)
    if (force) void this.vms.get(jobId)?.forceOff()
    return result
  }
}

/**
 * The command line a launch with `options` runs, as `qemu:get-command` and
 * `machines:get-command` show it: the image opened as the launch opens it (name policy, drift
 * guard, the disk source of --via native or raw), then the launch's own builder with the same
 * binary, accelerator, run folder and sockets.
 */
export async function vmCommandOptionsFor(
  services: IpcServices,
  options: LaunchOptions,
  acceptBase: boolean,
): Promise<QemuCommandOptions> {
  const { library } = services
  const via = options.via ?? 'nbd'
  const disk = await openImage(options.image, { readOnly: true, policy: await library.policy() })
  let source: QemuDiskSource | undefined
  let image: string
  try {
    await guardBaseDrift(disk, { library, acceptBase, doing: 'run it' })
    if (via !== 'nbd') source = diskSourceFor(disk, via)
    image = disk.path
  } finally {
    await disk.close()
  }
  const arch = hostArch()
  const binary = (await findQemuBinary(arch))?.path ?? `qemu-system-${arch}`
  return launchCommandOptions(options, {
    binary,
    arch,
    accelerator: await resolveAccelerator(options.machine?.accel ?? 'auto', arch, { binary }),
    image,
    runFolder: vmRunFolder(options.image),
    ...(source ? { disk: source } : {}),
  })
}

/** {@link vmCommandOptionsFor}'s command line, as the renderer shows it. */
export async function vmCommandFor(
  services: IpcServices,
  options: LaunchOptions,
  acceptBase: boolean,
): Promise<ResponseOf<'qemu:get-command'>> {
  const command = buildQemuCommand(await vmCommandOptionsFor(services, options, acceptBase))
  return {
    via: command.via,
    binary: command.binary,
    args: command.args,
    explained: command.explained,
    rendering: command.rendering,
    prerequisite: command.prerequisite,
  }
}
