import { EngineError } from '../../engine/errors'
import { openImage } from '../../engine/open'
import { defaultSocketPath } from '../../nbd/default-socket'
import { hostArch } from '../../qemu/binaries'
import { buildQemuCommand, vmName, type QemuDiskSource } from '../../qemu/command'
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
  usage: `addcow qemu-cmd [--via nbd|native|raw] [--json] IMAGE [-- EXTRA_QEMU_ARGS...]

  --json               print {via, binary, args, command, explained, prerequisite}
${OUTPUT_USAGE}
  --socket PATH        (nbd) the export's Unix socket (default: the one addcow serve
                       uses for IMAGE)
  --host H --port N    (nbd) the export's TCP address instead
  --export NAME        (nbd) the export name (default: empty)
  --tls-psk-dir DIR    (nbd) a folder with keys.psk for a TLS export
  --tls-username U     (nbd) the identity in keys.psk (default: qemu)
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
    ...QEMU_OPTIONS,
    ...ACCEPT_BASE_OPTION,
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 1, max: 1, names: 'one IMAGE' },
  passThrough: true,
  async run({ values, positionals, extra }, context) {
    const options = qemuOptionsFrom(values)
    const image = positionals[0]!
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
          ...(values['tls-psk-dir'] !== undefined
            ? {
                tls: {
                  pskFolder: values['tls-psk-dir'],
                  username: values['tls-username'] ?? 'qemu',
                },
              }
            : {}),
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
    const command = buildQemuCommand({
      ...options.machine,
      accel: accelerator.accel,
      accelReason: accelerator.reason,
      arch,
      disk: source,
      name: vmName(image),
      readOnly: options.readOnly,
      ...(options.headless ? { display: 'none' } : {}),
      ...(extra.length > 0 ? { extraArgs: extra } : {}),
    })
    if (values.json) {
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
