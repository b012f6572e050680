import { basename } from 'node:path'
import { StringDecoder } from 'node:string_decoder'
import { EngineError } from '../../engine/errors'
import { openImage } from '../../engine/open'
import { findQemuBinary, hostArch } from '../../qemu/binaries'
import { probeQemuCapabilities } from '../../qemu/capabilities'
import type { QemuDiskSource } from '../../qemu/command'
import { resolveAccelerator } from '../../qemu/accelerator'
import {
  diskSourceFor,
  launchCommand,
  launchVm,
  vmRunFolder,
  type LaunchOptions,
  type VmHandle,
} from '../../qemu/launcher'
import type { VmState } from '../../qemu/power'
import type { ParsedRequestOf } from '../../../shared/ipc/contract'
import type { AreaHandlers } from '../handler-table'
import type { IpcServices } from '../services'
import { stopSession } from '../sessions'
import { guardBaseDrift } from '../../engine/ops/drift'

/** Time a stopping VM gets to power down through ACPI before it is told to quit. */
const DEFAULT_VM_STOP_TIMEOUT_MS = 15_000

/**
 * QEMU's -display value for each window or VNC display the app offers (VNC on loopback only);
 * the in-app display (`app`) is not a -display value but a VNC Unix socket (inAppDisplay).
 */
const DISPLAY_VALUES = { gtk: 'gtk', sdl: 'sdl', vnc: 'vnc=127.0.0.1:0' } as const

/** The machine options a qemu:get-command or qemu:launch-vm request may set. */
function machineOptions(request: {
  machine?: string | undefined
  network?: 'user' | 'none' | undefined
  display?: keyof typeof DISPLAY_VALUES | 'app' | undefined
  headless: boolean
}): { machine?: string; network?: 'user' | 'none'; display?: string } {
  return {
    ...(request.machine !== undefined ? { machine: request.machine } : {}),
    ...(request.network !== undefined ? { network: request.network } : {}),
    ...(request.display !== undefined && request.display !== 'app' && !request.headless
      ? { display: DISPLAY_VALUES[request.display] }
      : {}),
  }
}

/** The launch options of a qemu:get-command or qemu:launch-vm request (both run the same). */
function launchOptions(request: ParsedRequestOf<'qemu:launch-vm'>): LaunchOptions {
  const { path, via, memoryMiB, cpus, headless, readOnly, extraArgs } = request
  return {
    image: path,
    via,
    readOnly,
    machine: {
      ...(memoryMiB !== undefined ? { memoryMiB } : {}),
      ...(cpus !== undefined ? { cpus } : {}),
      ...machineOptions(request),
    },
    headless,
    inAppDisplay: request.display === 'app',
    ...(extraArgs && extraArgs.length > 0 ? { extraArgs } : {}),
  }
}

/**
 * `qemu:*`: the QEMU command line (`addcow qemu-cmd`) and VMs (`addcow launch`). A VM is a job
 * that runs until QEMU exits: its detail line carries QEMU's pid (and the NBD URI it boots
 * from), its serial console and QEMU's messages arrive as `qemu:console-output` events
 * (sessionId = job id), and stopping it powers the guest down and ends the job as done.
 */
export function qemuHandlers(services: IpcServices): AreaHandlers<'qemu'> {
  const { library, bus, jobs, vms } = services

  /** The running VM of a launch job, or NOT_FOUND. */
  const runningVm = (jobId: string): VmHandle => {
    const vm = vms.get(jobId)
    if (!vm)
      throw new EngineError('NOT_FOUND', `There is no running VM for job ${jobId}.`, {
        field: 'jobId',
        value: jobId,
      })
    return vm
  }

  return {
    'qemu:get-command': async (request) => {
      const { path, via, acceptBase } = request
      const disk = await openImage(path, { readOnly: true, policy: await library.policy() })
      let source: QemuDiskSource | undefined
      let image: string
      try {
        await guardBaseDrift(disk, { library, acceptBase, doing: 'run it' })
        if (via !== 'nbd') source = diskSourceFor(disk, via)
        image = disk.path
      } finally {
        await disk.close()
      }
      // The launch's own command: same binary, accelerator, run folder and sockets.
      const arch = hostArch()
      const binary = (await findQemuBinary(arch))?.path ?? `qemu-system-${arch}`
      const command = launchCommand(launchOptions(request), {
        binary,
        arch,
        accelerator: await resolveAccelerator('auto', arch, { binary }),
        image,
        runFolder: vmRunFolder(path),
        ...(source ? { disk: source } : {}),
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
        const forward = (stream: 'serial' | 'stderr') => {
          const decoder = new StringDecoder('utf8')
          return (chunk: Buffer): void => {
            const text = decoder.write(chunk)
            if (text !== '') bus.emit('qemu:console-output', { sessionId: job.id, stream, text })
          }
        }
        const vm = await launchVm({
          ...launchOptions(request),
          onConsole: forward('serial'),
          onStderr: forward('stderr'),
          policy: await library.policy(),
          checks: [
            async (disk) => {
              await guardBaseDrift(disk, {
                library,
                acceptBase: request.acceptBase,
                doing: 'run it',
              })
            },
          ],
          stopTimeoutMs: services.vmStopTimeoutMs ?? DEFAULT_VM_STOP_TIMEOUT_MS,
          signal: job.signal,
        })
        vms.set(job.id, vm)
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
          vms.delete(job.id)
        }
      },
    },

    'qemu:stop-vm': async ({ jobId, force }) => {
      const result = stopSession(jobs, jobId, 'qemu:launch-vm')
      if (force) void vms.get(jobId)?.forceOff()
      return result
    },

    'qemu:power-vm': async ({ jobId, action }) => ({ state: await runningVm(jobId).power(action) }),

    'qemu:write-console': async ({ jobId, text }) => {
      const vm = runningVm(jobId)
      vm.writeConsole(text)
      return { written: Buffer.byteLength(text) }
    },
    'qemu:get-capabilities': async () => {
      const arch = hostArch()
      const found = await findQemuBinary(arch)
      const accelerator = await resolveAccelerator(
        'auto',
        arch,
        found ? { binary: found.path } : {},
      )
      const none = { available: true, reason: null }
      if (!found) {
        const missing = {
          available: false,
          reason: `No qemu-system-${arch} is installed (Debian: apt-get install qemu-system-x86).`,
        }
        return {
          binary: null,
          version: null,
          accelerator,
          displays: {
            default: missing,
            gtk: missing,
            sdl: missing,
            vnc: missing,
            app: missing,
            none,
          },
          defaultDisplay: 'none' as const,
          machines: [],
          nativeAddCow: missing,
          uefiFirmware: [],
        }
      }
      const capabilities = await probeQemuCapabilities(found.path)
      const desktop = Boolean(process.env.DISPLAY || process.env.WAYLAND_DISPLAY)
      const noDesktop =
        'There is no desktop session where QEMU runs (no DISPLAY or WAYLAND_DISPLAY), so no window can open; use VNC or none.'
      const windowOffer = (backend: 'gtk' | 'sdl') =>
        !capabilities.displays.includes(backend)
          ? {
              available: false,
              reason: `This QEMU has no ${backend.toUpperCase()} display (Debian: apt-get install qemu-system-gui).`,
            }
          : desktop
            ? none
            : { available: false, reason: noDesktop }
      const gtk = windowOffer('gtk')
      const sdl = windowOffer('sdl')
      const window = gtk.available || sdl.available
      return {
        binary: found.path,
        version: found.version,
        accelerator,
        displays: {
          default: window
            ? none
            : { available: false, reason: gtk.reason ?? sdl.reason ?? noDesktop },
          gtk,
          sdl,
          vnc: none,
          // VNC is built into every QEMU; the app bridges its Unix socket.
          app: none,
          none,
        },
        // A window opens where QEMU runs: on the user's desktop only in the Electron app.
        defaultDisplay:
          window && services.host.shell === 'electron' ? ('default' as const) : ('app' as const),
        machines: capabilities.machines,
        nativeAddCow: capabilities.nativeAddCow
          ? none
          : {
              available: false,
              reason:
                `${found.name} ${found.version ?? ''} has no add-cow driver ("Unknown driver 'add-cow'"); use the NBD export.`.replace(
                  '  ',
                  ' ',
                ),
            },
        uefiFirmware: capabilities.uefiFirmware,
      }
    },
  }
}
