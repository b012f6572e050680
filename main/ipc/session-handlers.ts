import { basename } from 'node:path'
import { StringDecoder } from 'node:string_decoder'
import type { Channel } from '../../shared/ipc/channels'
import type { Disk } from '../engine/disk'
import { EngineError } from '../engine/errors'
import { openImage } from '../engine/open'
import { assertBaseUnchanged, checkBaseDrift } from '../engine/ops/drift'
import { defaultSocketPath } from '../nbd/default-socket'
import { startExport } from '../nbd/start-export'
import { hostArch } from '../qemu/binaries'
import { buildQemuCommand, type QemuDiskSource } from '../qemu/command'
import { diskSourceFor, launchVm, resolveAccelerator, type VmHandle } from '../qemu/launcher'
import type { IpcServices } from './create-handlers'
import type { Handlers } from './handlers'

/** The channels of long-lived sessions: NBD exports and VMs, and the QEMU command line. */
export type SessionChannel =
  | 'qemu:get-command'
  | 'qemu:launch-vm'
  | 'qemu:stop-vm'
  | 'qemu:write-console'
  | 'nbd:serve-image'
  | 'nbd:stop-export'

/** Time a stopping VM gets to power down through ACPI before it is told to quit. */
const DEFAULT_VM_STOP_TIMEOUT_MS = 15_000

/** QEMU's -display value for each display the app offers (VNC on loopback only). */
const DISPLAY_VALUES = { gtk: 'gtk', sdl: 'sdl', vnc: 'vnc=127.0.0.1:0' } as const

/** The machine options a qemu:get-command or qemu:launch-vm request may set. */
function machineOptions(request: {
  machine?: string | undefined
  network?: 'user' | 'none' | undefined
  display?: keyof typeof DISPLAY_VALUES | undefined
  headless: boolean
}): { machine?: string; network?: 'user' | 'none'; display?: string } {
  return {
    ...(request.machine !== undefined ? { machine: request.machine } : {}),
    ...(request.network !== undefined ? { network: request.network } : {}),
    ...(request.display !== undefined && !request.headless
      ? { display: DISPLAY_VALUES[request.display] }
      : {}),
  }
}

/**
 * Serve, qemu-cmd and launch as IPC handlers. An export or a VM is a job that runs until it is
 * stopped (or QEMU exits): its detail line carries the NBD URI or the VM's pid, the VM's serial
 * console and QEMU's messages arrive as `qemu:console-output` events (sessionId = job id), and
 * stopping it is cancelling the job, which shuts it down cleanly and ends the job as done.
 */
export function createSessionHandlers(services: IpcServices): Pick<Handlers, SessionChannel> {
  const { library, bus, jobs } = services
  const policy = () => library.policy()
  const vms = new Map<string, VmHandle>()

  /** The drift guard serve, qemu-cmd and launch share (as `--accept-base` in the CLI). */
  const driftGuard =
    (acceptBase: boolean, doing: string) =>
    async (disk: Disk): Promise<void> => {
      const report = await checkBaseDrift(disk, library)
      assertBaseUnchanged(report, { force: acceptBase, doing })
      if (
        acceptBase &&
        report.current &&
        (report.status === 'changed' || report.status === 'not-recorded')
      ) {
        await library.recordBaseFingerprint(report.current)
      }
    }

  /** Stop the job `jobId` if it is one of `channel`'s. */
  const stop = (jobId: string, channel: Channel): { stopping: boolean } => {
    const job = jobs.get(jobId)
    if (!job || job.channel !== channel) {
      throw new EngineError('NOT_FOUND', `There is no ${channel} job ${jobId}.`, {
        field: 'jobId',
        value: jobId,
      })
    }
    return { stopping: jobs.cancel(jobId).cancelled }
  }

  const until = (signal: AbortSignal): Promise<void> =>
    new Promise((resolve) => {
      if (signal.aborted) resolve()
      else signal.addEventListener('abort', () => resolve(), { once: true })
    })

  return {
    'qemu:get-command': async (request) => {
      const { path, via, memoryMiB, cpus, headless, readOnly, acceptBase, extraArgs } = request
      const disk = await openImage(path, { readOnly: true, policy: await policy() })
      let source: QemuDiskSource
      try {
        await driftGuard(acceptBase, 'run it')(disk)
        source =
          via === 'nbd'
            ? { via: 'nbd', exportName: '', image: disk.path, socket: defaultSocketPath(disk.path) }
            : diskSourceFor(disk, via)
      } finally {
        await disk.close()
      }
      const arch = hostArch()
      const command = buildQemuCommand({
        arch,
        accel: await resolveAccelerator('auto', arch),
        disk: source,
        readOnly,
        ...(memoryMiB !== undefined ? { memoryMiB } : {}),
        ...(cpus !== undefined ? { cpus } : {}),
        ...machineOptions(request),
        ...(headless ? { display: 'none' } : {}),
        ...(extraArgs && extraArgs.length > 0 ? { extraArgs } : {}),
      })
      return {
        via: command.via,
        binary: command.binary,
        args: command.args,
        explained: command.explained,
        rendering: command.rendering,
        prerequisite: command.prerequisite,
      }
    },

    'qemu:launch-vm': {
      unit: 'steps',
      title: ({ path }) => `Run ${basename(path)} in QEMU`,
      async run(request, job) {
        const { path, via, memoryMiB, cpus, headless, readOnly, acceptBase, extraArgs } = request
        const vm = await launchVm({
          image: path,
          via,
          readOnly,
          policy: await policy(),
          checks: [driftGuard(acceptBase, 'run it')],
          machine: {
            ...(memoryMiB !== undefined ? { memoryMiB } : {}),
            ...(cpus !== undefined ? { cpus } : {}),
            ...machineOptions(request),
          },
          headless,
          ...(extraArgs && extraArgs.length > 0 ? { extraArgs } : {}),
          stopTimeoutMs: services.vmStopTimeoutMs ?? DEFAULT_VM_STOP_TIMEOUT_MS,
          signal: job.signal,
        })
        vms.set(job.id, vm)
        job.describe(`QEMU pid ${vm.pid}${vm.exportUri ? ` · ${vm.exportUri}` : ''}`)
        const forward = (stream: 'serial' | 'stderr') => {
          const decoder = new StringDecoder('utf8')
          return (chunk: Buffer): void => {
            const text = decoder.write(chunk)
            if (text !== '') bus.emit('qemu:console-output', { sessionId: job.id, stream, text })
          }
        }
        vm.on('console', forward('serial'))
        vm.on('stderr', forward('stderr'))
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
          vms.delete(job.id)
        }
      },
    },

    'qemu:stop-vm': async ({ jobId }) => stop(jobId, 'qemu:launch-vm'),

    'qemu:write-console': async ({ jobId, text }) => {
      const vm = vms.get(jobId)
      if (!vm)
        throw new EngineError('NOT_FOUND', `There is no running VM for job ${jobId}.`, {
          field: 'jobId',
          value: jobId,
        })
      vm.writeConsole(text)
      return { written: Buffer.byteLength(text) }
    },

    'nbd:serve-image': {
      unit: 'steps',
      title: ({ path }) => `Serve ${basename(path)} over NBD`,
      async run({ path, socket, port, exportName, readOnly, acceptBase }, job) {
        if (socket !== undefined && port !== undefined) {
          throw new EngineError(
            'BAD_ARGUMENT',
            'Serve on a Unix socket or on a TCP port, not both.',
            { field: 'port' },
          )
        }
        const handle = await startExport({
          image: path,
          readOnly,
          policy: await policy(),
          exportName,
          // The app serves on loopback only; a network export needs TLS, which the CLI sets up.
          listen:
            port !== undefined
              ? { host: '127.0.0.1', port }
              : { socket: socket ?? defaultSocketPath(path) },
          checks: [driftGuard(acceptBase, 'serve it')],
          signal: job.signal,
        })
        try {
          job.describe(handle.uri)
          await until(job.signal)
        } finally {
          await handle.stop()
        }
        return { uri: handle.uri }
      },
    },

    'nbd:stop-export': async ({ jobId }) => stop(jobId, 'nbd:serve-image'),
  }
}
