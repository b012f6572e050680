import { resolve } from 'node:path'
import { EngineError } from '../../engine/errors'
import { openImage } from '../../engine/open'
import { defaultSocketPath } from '../../nbd/default-socket'
import { hostArch } from '../../qemu/binaries'
import {
  buildQemuCommand,
  vmName,
  type NbdClientTls,
  type QemuCommandOptions,
  type QemuDiskSource,
} from '../../qemu/command'
import { exportScript } from '../../qemu/export-script'
import { libvirtDomainXml } from '../../qemu/libvirt'
import { isLoopbackHost } from '../../nbd/tls'
import { resolveAccelerator } from '../../qemu/accelerator'
import { diskSourceFor } from '../../qemu/launcher'
import { defineCommand } from '../command'
import {
  ACCEPT_BASE_OPTION,
  ACCEPT_BASE_USAGE,
  baseDriftCheck,
  JSON_OPTION,
  OUTPUT_USAGE,
  NAME_POLICY_OPTIONS,
  NAME_POLICY_USAGE,
  NBD_PORT,
  parsePort,
  policyFrom,
  QEMU_OPTIONS,
  QEMU_USAGE,
  qemuOptionsFrom,
} from '../options'

/** `addcow qemu-cmd`: the QEMU command line for an image, each option explained. */
export const qemuCmdCommand = defineCommand({
  name: 'qemu-cmd',
  summary: 'print the QEMU command line for an image, each option explained',
  usage: `addcow qemu-cmd [--via nbd|native|raw] [--json|--script|--libvirt] IMAGE [-- EXTRA_QEMU_ARGS...]

  --json               print {via, binary, args, command, explained, prerequisite}
  --script             print a POSIX sh script that starts the export, runs this
                       command line and stops the export when QEMU exits
  --libvirt            print a libvirt domain (XML) of the same machine, its disk
                       the NBD export (virsh define FILE)
${OUTPUT_USAGE}
  --socket PATH        (nbd) the export's Unix socket (default: the one addcow serve
                       uses for IMAGE)
  --host H --port N    (nbd) the export's TCP address instead
  --export NAME        (nbd) the export name (default: empty)
  --tls-psk-dir DIR    (nbd) a folder with keys.psk for a TLS export
  --tls-username U     (nbd) the identity in keys.psk (default: qemu)
  --tls-creds DIR      (nbd) X.509 TLS: DIR holds ca-cert.pem (and client-cert.pem,
                       client-key.pem if the export checks clients), as QEMU's
                       tls-creds-x509 wants; the serve line gets --tls-creds DIR too
${QEMU_USAGE}
${ACCEPT_BASE_USAGE}
${NAME_POLICY_USAGE}

Arguments after -- are appended to the QEMU command line as given.`,
  options: {
    ...JSON_OPTION,
    socket: { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    export: { type: 'string' },
    'tls-psk-dir': { type: 'string' },
    'tls-username': { type: 'string' },
    'tls-creds': { type: 'string' },
    script: { type: 'boolean' },
    libvirt: { type: 'boolean' },
    ...QEMU_OPTIONS,
    ...ACCEPT_BASE_OPTION,
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 1, max: 1, names: 'one IMAGE' },
  passThrough: true,
  async run({ values, positionals, extra }, context) {
    const options = qemuOptionsFrom(values)
    const image = positionals[0]!
    if ([values.json, values.script, values.libvirt].filter(Boolean).length > 1) {
      throw new EngineError(
        'BAD_ARGUMENT',
        'addcow qemu-cmd prints one of --json, --script or --libvirt, not several.',
      )
    }
    const tls = clientTls(values)
    if (values.host !== undefined && !isLoopbackHost(values.host) && !tls) {
      throw new EngineError(
        'BAD_ARGUMENT',
        `An export on ${values.host} is reached over the network: give --tls-creds DIR (X.509) or --tls-psk-dir DIR, since addcow serve refuses a non-loopback address without TLS.`,
        { field: 'host', value: values.host },
      )
    }
    if (values.socket !== undefined && (values.host !== undefined || values.port !== undefined)) {
      throw new EngineError(
        'BAD_ARGUMENT',
        'addcow qemu-cmd takes either --socket or --host/--port, not both.',
      )
    }
    const disk = await openImage(image, {
      readOnly: true,
      policy: await policyFrom(context, values),
      ...(options.format ? { format: options.format } : {}),
    })
    let source: QemuDiskSource
    try {
      await baseDriftCheck(context, 'qemu-cmd', values['accept-base'] ?? false)(disk)
      if (options.via === 'nbd') {
        const tcp = values.host !== undefined || values.port !== undefined
        source = {
          via: 'nbd',
          exportName: values.export ?? '',
          image: disk.path,
          ...(tcp
            ? {
                host: values.host ?? '127.0.0.1',
                port: values.port !== undefined ? parsePort(values.port) : NBD_PORT,
              }
            : { socket: values.socket ?? defaultSocketPath(disk.path) }),
          ...(tls ? { tls } : {}),
          serveOptions: serveOptionsOf(values),
        }
      } else {
        source = diskSourceFor(disk, options.via)
      }
    } finally {
      await disk.close()
    }
    const arch = hostArch()
    const accelerator = await resolveAccelerator(
      options.machine.accel ?? 'auto',
      arch,
      options.machine.binary !== undefined ? { binary: options.machine.binary } : {},
    )
    const commandOptions: QemuCommandOptions = {
      ...options.machine,
      accel: accelerator.accel,
      accelReason: accelerator.reason,
      arch,
      disk: source,
      name: vmName(image),
      readOnly: options.readOnly,
      ...(options.headless ? { display: 'none' } : {}),
      ...(extra.length > 0 ? { extraArgs: extra } : {}),
    }
    const command = buildQemuCommand(commandOptions)
    if (values.script) {
      context.stdout.write(
        exportScript(command, {
          options: commandOptions,
          title: `Boot ${disk.path} in QEMU (addcow qemu-cmd --script).`,
        }),
      )
    } else if (values.libvirt) {
      context.stdout.write(libvirtDomainXml(commandOptions))
    } else if (values.json) {
      context.stdout.write(
        JSON.stringify(
          {
            via: command.via,
            binary: command.binary,
            args: command.args,
            command: command.rendering,
            explained: command.explained,
            prerequisite: command.prerequisite,
          },
          null,
          4,
        ) + '\n',
      )
    } else {
      context.stdout.write(command.rendering)
    }
    return 0
  },
})

/** The client TLS the options name: X.509 (--tls-creds) or PSK (--tls-psk-dir), not both. */
function clientTls(values: {
  'tls-creds'?: string
  'tls-psk-dir'?: string
  'tls-username'?: string
}): NbdClientTls | null {
  if (values['tls-creds'] !== undefined && values['tls-psk-dir'] !== undefined) {
    throw new EngineError(
      'BAD_ARGUMENT',
      'addcow qemu-cmd takes --tls-creds (X.509) or --tls-psk-dir (pre-shared keys), not both.',
    )
  }
  if (values['tls-creds'] !== undefined) return { x509Folder: resolve(values['tls-creds']) }
  if (values['tls-psk-dir'] !== undefined)
    return { pskFolder: values['tls-psk-dir'], username: values['tls-username'] ?? 'qemu' }
  return null
}

/**
 * What the serve line must repeat so the export opens the image as this run did: its format
 * and the names this run allowed (the library's trusted pairs apply to both by themselves).
 */
function serveOptionsOf(values: {
  f?: string
  'allow-name'?: string[]
  'allow-any-name'?: boolean
}): string[] {
  return [
    ...(values.f !== undefined ? ['-f', values.f] : []),
    ...(values['allow-name'] ?? []).flatMap((path) => ['--allow-name', path]),
    ...(values['allow-any-name'] ? ['--allow-any-name'] : []),
  ]
}
