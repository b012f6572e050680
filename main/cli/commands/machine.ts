import { resolve } from 'node:path'
import {
  parsePortForward,
  SavedMachineSchema,
  type PortForward,
  type SavedMachine,
  type SavedMachineInput,
} from '../../../shared/machine-types'
import { EngineError } from '../../engine/errors'
import { hostArch } from '../../qemu/binaries'
import { resolveAccelerator } from '../../qemu/accelerator'
import { buildQemuCommand } from '../../qemu/command'
import { exportScript } from '../../qemu/export-script'
import {
  assertLaunchChoices,
  launchCommandOptions,
  qemuBinaryFor,
  vmRunFolder,
} from '../../qemu/launcher'
import { libvirtDomainXml } from '../../qemu/libvirt'
import { machineLaunchOptions } from '../../qemu/machines'
import { defineCommand } from '../command'
import {
  ACCEPT_BASE_OPTION,
  ACCEPT_BASE_USAGE,
  baseDriftCheck,
  JSON_OPTION,
  OUTPUT_USAGE,
  NAME_POLICY_OPTIONS,
  NAME_POLICY_USAGE,
  parseMemory,
  policyFrom,
} from '../options'
import { runLaunch } from './launch'

const USAGE = `addcow machine list [--json]
addcow machine show [--json] NAME
addcow machine save [options] NAME IMAGE [-- EXTRA_QEMU_ARGS...]
addcow machine copy NAME NEW_NAME
addcow machine rm NAME
addcow machine cmd [--json|--script|--libvirt] NAME
                                print the command line 'start' runs
addcow machine start [--serial FILE] [--discard-changes] NAME

Saved machines live in the library file the app shares, so the app and the CLI start a
machine the same way. 'save' replaces a machine of the same name only with --replace.
A UEFI machine keeps its variable store (boot entries, settings) in the data folder,
machines/NAME/OVMF_VARS.fd; 'copy' copies it and 'rm' deletes it.

  --json               (list, show, cmd) print JSON
  --script             (cmd) print a POSIX sh script that starts the export, runs
                       the command line and stops the export when QEMU exits
  --libvirt            (cmd) print the machine as a libvirt domain (XML)
${OUTPUT_USAGE}
  --serial FILE        (start) write the guest's serial console to FILE
  --discard-changes    (start) run without saving changes: a throw-away overlay on the
                       image, deleted when QEMU exits

save options:
  -m, --memory SIZE        guest memory (default 2048 MiB)
  --cpus N                 virtual CPUs (default 2)
  --type TYPE              machine type (default q35 on x86)
  --firmware bios|uefi     firmware (default bios; uefi uses Debian's OVMF)
  --uefi-code PATH         the OVMF code image to use
  --cdrom ISO              boot from a CD-ROM image (the disk second)
  --kernel K               boot a kernel directly
  --initrd I               its initrd
  --append CMDLINE         its command line
  --network user|none      user-mode NAT (default) or none
  --forward tcp:HOSTPORT:GUESTPORT   forward a host port (loopback) to the guest; repeatable
  --display none|vnc|gtk|sdl|default (default none)
  --accel auto|kvm|tcg     default auto: KVM when a test guest runs on it, else TCG
  --via nbd|native|raw     how QEMU reaches the disk (default nbd)
  --read-only              the guest cannot write the disk
  --copy-on-read           copy what the guest reads from the base into the overlay
                           (needs --via nbd)
  --replace                overwrite a machine of the same name
${ACCEPT_BASE_USAGE}
${NAME_POLICY_USAGE}`

function oneOf<T extends string>(
  value: string | undefined,
  allowed: readonly T[],
  what: string,
): T | undefined {
  if (value === undefined) return undefined
  if (!(allowed as readonly string[]).includes(value))
    throw new EngineError(
      'BAD_ARGUMENT',
      `--${what} '${value}' is not one of ${allowed.join(', ')}.`,
      {
        field: what,
        value,
      },
    )
  return value as T
}

/** `tcp:2222:22` or `udp:127.0.0.1:5353:53`. */
function parseForward(text: string): PortForward {
  const forward = parsePortForward(text)
  if (!forward)
    throw new EngineError(
      'BAD_ARGUMENT',
      `--forward '${text}' is not PROTOCOL:HOSTPORT:GUESTPORT (e.g. tcp:2222:22).`,
      { field: 'forward', value: text },
    )
  return forward
}

function describe(machine: SavedMachine): string {
  const boot =
    machine.boot.kind === 'disk'
      ? 'the disk'
      : machine.boot.kind === 'cdrom'
        ? `the CD-ROM ${machine.boot.iso}`
        : `the kernel ${machine.boot.kernel}`
  return [
    `${machine.name}: ${machine.disk}`,
    `  ${machine.memoryMiB} MiB, ${machine.cpus} CPU${machine.cpus === 1 ? '' : 's'}, ${machine.machine ?? 'default machine'}, ${machine.firmware.toUpperCase()}, boots ${boot}`,
    `  network ${machine.network}${machine.portForwards.map((f) => `, ${f.protocol} ${f.hostAddress ?? '127.0.0.1'}:${f.hostPort} → ${f.guestPort}`).join('')}; display ${machine.display}; accelerator ${machine.accel}; via ${machine.via}${machine.readOnly ? '; read-only' : ''}${machine.copyOnRead ? '; copy-on-read' : ''}`,
    ...(machine.extraArgs.length > 0 ? [`  extra: ${machine.extraArgs.join(' ')}`] : []),
  ].join('\n')
}

/** `addcow machine`: saved machines (list, show, save, copy, rm, cmd, start). */
export const machineCommand = defineCommand({
  name: 'machine',
  summary: 'saved machines: list, save, copy, remove, print and start them',
  usage: USAGE,
  options: {
    ...JSON_OPTION,
    m: { type: 'string', short: 'm' },
    memory: { type: 'string' },
    cpus: { type: 'string' },
    type: { type: 'string' },
    firmware: { type: 'string' },
    'uefi-code': { type: 'string' },
    cdrom: { type: 'string' },
    kernel: { type: 'string' },
    initrd: { type: 'string' },
    append: { type: 'string' },
    network: { type: 'string' },
    forward: { type: 'string', multiple: true },
    display: { type: 'string' },
    accel: { type: 'string' },
    via: { type: 'string' },
    'read-only': { type: 'boolean' },
    'copy-on-read': { type: 'boolean' },
    replace: { type: 'boolean' },
    serial: { type: 'string' },
    'discard-changes': { type: 'boolean' },
    script: { type: 'boolean' },
    libvirt: { type: 'boolean' },
    ...ACCEPT_BASE_OPTION,
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 1, max: 3, names: 'an action and its arguments' },
  passThrough: true,
  async run({ values, positionals, extra }, context) {
    const [action, first, second] = positionals
    const needs = (count: number, names: string): void => {
      if (positionals.length !== count + 1)
        throw new EngineError('BAD_ARGUMENT', `addcow machine ${action} takes ${names}.`, {
          field: 'arguments',
        })
    }
    const library = context.library
    switch (action) {
      case 'list': {
        needs(0, 'no arguments')
        const machines = await library.machines()
        for (const problem of library.machineProblems)
          context.stderr.write(`addcow machine: ignored ${problem}\n`)
        if (values.json) context.stdout.write(JSON.stringify(machines, null, 4) + '\n')
        else if (machines.length === 0) context.stdout.write('No saved machines.\n')
        else context.stdout.write(machines.map(describe).join('\n') + '\n')
        return 0
      }
      case 'show': {
        needs(1, 'one NAME')
        const machine = await library.machine(first!)
        context.stdout.write(
          values.json ? JSON.stringify(machine, null, 4) + '\n' : describe(machine) + '\n',
        )
        return 0
      }
      case 'rm': {
        needs(1, 'one NAME')
        await library.removeMachine(first!)
        context.stdout.write(`Removed machine '${first}'.\n`)
        return 0
      }
      case 'copy': {
        needs(2, 'NAME NEW_NAME')
        await library.copyMachine(first!, second!)
        context.stdout.write(`Copied machine '${first}' to '${second}'.\n`)
        return 0
      }
      case 'save': {
        needs(2, 'NAME IMAGE')
        const memoryText = values.memory ?? values.m
        const kernel = values.kernel
        if (values.cdrom !== undefined && kernel !== undefined)
          throw new EngineError(
            'BAD_ARGUMENT',
            'A machine boots from --cdrom or --kernel, not both.',
          )
        if ((values.initrd !== undefined || values.append !== undefined) && kernel === undefined)
          throw new EngineError('BAD_ARGUMENT', '--initrd and --append go with --kernel.')
        const input: SavedMachineInput = {
          name: first!,
          disk: resolve(second!),
          ...(memoryText !== undefined ? { memoryMiB: parseMemory(memoryText) } : {}),
          ...(values.cpus !== undefined ? { cpus: Number(values.cpus) } : {}),
          ...(values.type !== undefined ? { machine: values.type } : {}),
          ...(values.firmware !== undefined
            ? { firmware: oneOf(values.firmware, ['bios', 'uefi'] as const, 'firmware')! }
            : {}),
          ...(values['uefi-code'] !== undefined ? { uefiCode: resolve(values['uefi-code']) } : {}),
          boot:
            kernel !== undefined
              ? {
                  kind: 'kernel',
                  kernel: resolve(kernel),
                  ...(values.initrd !== undefined ? { initrd: resolve(values.initrd) } : {}),
                  ...(values.append !== undefined ? { cmdline: values.append } : {}),
                }
              : values.cdrom !== undefined
                ? { kind: 'cdrom', iso: resolve(values.cdrom) }
                : { kind: 'disk' },
          ...(values.network !== undefined
            ? { network: oneOf(values.network, ['user', 'none'] as const, 'network')! }
            : {}),
          portForwards: (values.forward ?? []).map(parseForward),
          ...(values.display !== undefined
            ? {
                display: oneOf(
                  values.display,
                  ['none', 'vnc', 'gtk', 'sdl', 'default'] as const,
                  'display',
                )!,
              }
            : {}),
          ...(values.accel !== undefined
            ? { accel: oneOf(values.accel, ['auto', 'kvm', 'tcg'] as const, 'accel')! }
            : {}),
          ...(values.via !== undefined
            ? { via: oneOf(values.via, ['nbd', 'native', 'raw'] as const, 'via')! }
            : {}),
          readOnly: values['read-only'] ?? false,
          copyOnRead: values['copy-on-read'] ?? false,
          extraArgs: extra,
        }
        const parsed = SavedMachineSchema.safeParse(input)
        if (!parsed.success) {
          const issue = parsed.error.issues[0]
          throw new EngineError(
            'BAD_ARGUMENT',
            `The machine's ${issue?.path.join('.') || 'settings'} ${issue?.message ?? 'is not valid'}.`,
            { field: issue?.path.join('.') ?? '' },
          )
        }
        assertLaunchChoices({
          image: parsed.data.disk,
          via: parsed.data.via,
          readOnly: parsed.data.readOnly,
          copyOnRead: parsed.data.copyOnRead,
        })
        const saved = await library.saveMachine(parsed.data, { replace: values.replace ?? false })
        context.stdout.write(`Saved machine '${saved.name}'.\n${describe(saved)}\n`)
        return 0
      }
      case 'cmd': {
        needs(1, 'one NAME')
        if ([values.json, values.script, values.libvirt].filter(Boolean).length > 1) {
          throw new EngineError(
            'BAD_ARGUMENT',
            'addcow machine cmd prints one of --json, --script or --libvirt, not several.',
          )
        }
        const machine = await library.machine(first!)
        const options = await machineLaunchOptions(machine, library.machineFolder(machine.name))
        const arch = hostArch()
        const binary = await qemuBinaryFor(arch)
        const runFolder = vmRunFolder(machine.disk)
        const commandOptions = launchCommandOptions(options, {
          binary,
          arch,
          accelerator: await resolveAccelerator(machine.accel, arch, { binary }),
          image: machine.disk,
          runFolder,
        })
        const command = buildQemuCommand(commandOptions)
        context.stdout.write(
          values.script
            ? exportScript(command, {
                options: commandOptions,
                runFolder,
                title: `Start the saved machine '${machine.name}' (addcow machine cmd --script).`,
              })
            : values.libvirt
              ? libvirtDomainXml(commandOptions)
              : values.json
                ? JSON.stringify({ binary: command.binary, args: command.args }, null, 4) + '\n'
                : command.rendering,
        )
        return 0
      }
      case 'start': {
        needs(1, 'one NAME')
        const machine = await library.machine(first!)
        return runLaunch(context, {
          ...(await machineLaunchOptions(machine, library.machineFolder(machine.name))),
          policy: await policyFrom(context, values),
          checks: [baseDriftCheck(context, 'launch', values['accept-base'] ?? false)],
          discardChanges: values['discard-changes'] ?? false,
          ...(values.serial !== undefined ? { serialFile: values.serial } : {}),
        })
      }
      default:
        throw new EngineError(
          'BAD_ARGUMENT',
          `'${action}' is not a machine action (list, show, save, copy, rm, cmd, start).`,
          { field: 'action', value: action },
        )
    }
  },
})
