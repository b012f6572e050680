import { basename } from 'node:path'
import { StringDecoder } from 'node:string_decoder'
import { EngineError } from '../../engine/errors'
import { openImage } from '../../engine/open'
import { defaultSocketPath } from '../../nbd/default-socket'
import { hostArch } from '../../qemu/binaries'
import { buildQemuCommand, type QemuDiskSource } from '../../qemu/command'
import { resolveAccelerator } from '../../qemu/accelerator'
import { diskSourceFor, launchVm, type VmHandle } from '../../qemu/launcher'
import type { AreaHandlers } from '../handler-table'
import type { IpcServices } from '../services'
import { stopSession } from '../sessions'
import { guardBaseDrift } from '../../engine/ops/drift'

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
 * `qemu:*`: the QEMU command line (`addcow qemu-cmd`) and VMs (`addcow launch`). A VM is a job
 * that runs until QEMU exits: its detail line carries QEMU's pid (and the NBD URI it boots
 * from), its serial console and QEMU's messages arrive as `qemu:console-output` events
 * (sessionId = job id), and stopping it powers the guest down and ends the job as done.
 */
export function qemuHandlers(services: IpcServices): AreaHandlers<'qemu'> {
  const { library, bus, jobs } = services
  const vms = new Map<string, VmHandle>()

  return {
    'qemu:get-command': async (request) => {
      const { path, via, memoryMiB, cpus, headless, readOnly, acceptBase, extraArgs } = request
      const disk = await openImage(path, { readOnly: true, policy: await library.policy() })
      let source: QemuDiskSource
      try {
        await guardBaseDrift(disk, { library, acceptBase, doing: 'run it' })
        source =
          via === 'nbd'
            ? { via: 'nbd', exportName: '', image: disk.path, socket: defaultSocketPath(disk.path) }
            : diskSourceFor(disk, via)
      } finally {
        await disk.close()
      }
      const arch = hostArch()
      const accelerator = await resolveAccelerator('auto', arch)
      const command = buildQemuCommand({
        arch,
        accel: accelerator.accel,
        accelReason: accelerator.reason,
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
          policy: await library.policy(),
          checks: [
            async (disk) => {
              await guardBaseDrift(disk, { library, acceptBase, doing: 'run it' })
            },
          ],
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

    'qemu:stop-vm': async ({ jobId }) => stopSession(jobs, jobId, 'qemu:launch-vm'),

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
  }
}
