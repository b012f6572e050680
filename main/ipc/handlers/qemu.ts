import { basename } from 'node:path'
import { findQemuBinary, hostArch } from '../../qemu/binaries'
import { probeQemuCapabilities } from '../../qemu/capabilities'
import { buildQemuCommand } from '../../qemu/command'
import { exportScript } from '../../qemu/export-script'
import { libvirtDomainXml } from '../../qemu/libvirt'
import { resolveAccelerator } from '../../qemu/accelerator'
import { vmRunFolder, type LaunchOptions } from '../../qemu/launcher'
import type { ParsedRequestOf } from '../../../shared/ipc/contract'
import type { AreaHandlers } from '../handler-table'
import type { IpcServices } from '../services'
import { runVmLiveJob, vmLiveCommitRadius, vmLiveStatus } from '../vm-live-jobs'
import { vmCommandFor, vmCommandOptionsFor, type VmSessions } from '../vm-sessions'
import { liveCommitResultSchema, liveFlattenResultSchema } from '../../../shared/live-copy-jobs'

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
  const { path, via, memoryMiB, cpus, headless, readOnly, extraArgs, discardChanges, copyOnRead } =
    request
  return {
    image: path,
    via,
    readOnly,
    discardChanges,
    copyOnRead,
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
export function qemuHandlers(services: IpcServices, vms: VmSessions): AreaHandlers<'qemu'> {
  return {
    'qemu:get-command': (request) =>
      vmCommandFor(services, launchOptions(request), request.acceptBase),

    'qemu:export-command': async (request) => {
      const { as, ...commandRequest } = request
      const options = await vmCommandOptionsFor(
        services,
        launchOptions(commandRequest),
        commandRequest.acceptBase,
      )
      const stem = basename(request.path).replace(/[^A-Za-z0-9._-]/g, '_')
      if (as === 'libvirt')
        return { text: libvirtDomainXml(options), fileName: `${stem}.libvirt.xml` }
      const text = exportScript(buildQemuCommand(options), {
        options,
        runFolder: vmRunFolder(request.path),
        title: `Boot ${request.path} in QEMU (exported by AddCow Studio).`,
      })
      return { text, fileName: `${stem}.sh` }
    },

    'qemu:launch-vm': {
      unit: 'steps',
      title: ({ path }) => `Run ${basename(path)} in QEMU`,
      run: (request, job) => vms.run(services, job, launchOptions(request), request.acceptBase),
    },

    'qemu:stop-vm': async ({ jobId, force }) => vms.stop(services, jobId, force),

    'qemu:power-vm': async ({ jobId, action }) => ({ state: await vms.get(jobId).power(action) }),

    'qemu:write-console': async ({ jobId, text }) => {
      vms.get(jobId).writeConsole(text)
      return { written: Buffer.byteLength(text) }
    },
    'qemu:get-console': async ({ jobId }) => vms.console(jobId),
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

    'qemu:snapshot-vm': {
      unit: 'steps',
      title: () => 'Live snapshot of a running VM',
      run: ({ jobId, name }, job) => vms.snapshot(services, jobId, name, job),
    },

    'qemu:flatten-vm': {
      unit: 'bytes',
      title: () => 'Live flatten of a running VM',
      run: ({ jobId, ...args }, job) =>
        runVmLiveJob(
          services,
          vms,
          { jobId, command: 'flatten', args },
          job,
          liveFlattenResultSchema,
        ),
    },

    'qemu:commit-vm': {
      unit: 'bytes',
      title: ({ layer }) =>
        (layer ?? 0) === 0
          ? 'Live commit of a running VM (active)'
          : `Live commit of layer ${layer} of a running VM`,
      run: ({ jobId, ...args }, job) =>
        runVmLiveJob(
          services,
          vms,
          { jobId, command: 'commit', args },
          job,
          liveCommitResultSchema,
        ),
    },

    'qemu:get-live-status': async ({ jobId }) => vmLiveStatus(vms, jobId),

    'qemu:get-live-commit-radius': async ({ jobId, layer }) =>
      vmLiveCommitRadius(services, vms, jobId, layer),
  }
}
