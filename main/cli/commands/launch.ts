import { createWriteStream, type WriteStream } from 'node:fs'
import { resolve } from 'node:path'
import { EngineError } from '../../engine/errors'
import { launchVm, type LaunchOptions } from '../../qemu/launcher'
import { defineCommand, untilCancelled, type CommandContext } from '../command'
import {
  ACCEPT_BASE_OPTION,
  ACCEPT_BASE_USAGE,
  baseDriftCheck,
  NAME_POLICY_OPTIONS,
  NAME_POLICY_USAGE,
  policyFrom,
  QEMU_OPTIONS,
  QEMU_USAGE,
  qemuOptionsFrom,
} from '../options'

function openConsoleFile(path: string): Promise<WriteStream> {
  return new Promise((done, fail) => {
    const stream = createWriteStream(path, { flags: 'w' })
    stream.once('open', () => done(stream))
    stream.once('error', (error) =>
      fail(
        new EngineError('IO_ERROR', `Cannot write the serial log ${path}: ${error.message}.`, {
          path,
          cause: error,
        }),
      ),
    )
  })
}

/** `addcow launch`: QEMU on an image (through its NBD export by default) until QEMU exits. */
export const launchCommand = defineCommand({
  name: 'launch',
  summary: 'run QEMU on an image (through the NBD export by default)',
  usage: `addcow launch [--headless] [--serial FILE] [--copy-on-read] IMAGE [-- EXTRA_QEMU_ARGS...]

  --serial FILE        write the guest's serial console to FILE (default: this terminal)
  --discard-changes    run without saving changes: the guest writes into a throw-away
                       overlay, deleted when QEMU exits
  --copy-on-read       copy what the guest reads from the base into the overlay, so a
                       slow or remote base warms it (as addcow serve --copy-on-read)
  --stop-timeout SEC   on Ctrl-C: seconds the guest gets to power down before QEMU is
                       told to quit (default 30)
  --control-socket PATH
                       take live commands (addcow job: snapshot, status, cancel) on
                       this Unix socket (default: the image's, as addcow serve)
${QEMU_USAGE}
${ACCEPT_BASE_USAGE}
${NAME_POLICY_USAGE}

Starts the NBD export and QEMU together and returns QEMU's exit status once QEMU exits;
Ctrl-C powers the guest down. The export is flushed before addcow exits.
Arguments after -- are appended to the QEMU command line as given.`,
  options: {
    serial: { type: 'string' },
    'stop-timeout': { type: 'string' },
    'discard-changes': { type: 'boolean' },
    'copy-on-read': { type: 'boolean' },
    'control-socket': { type: 'string' },
    ...QEMU_OPTIONS,
    ...ACCEPT_BASE_OPTION,
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 1, max: 1, names: 'one IMAGE' },
  passThrough: true,
  async run({ values, positionals, extra }, context) {
    const options = qemuOptionsFrom(values)
    let stopTimeoutMs = 30_000
    if (values['stop-timeout'] !== undefined) {
      const seconds = Number(values['stop-timeout'])
      if (!Number.isFinite(seconds) || seconds < 0 || seconds > 3600) {
        throw new EngineError(
          'BAD_ARGUMENT',
          `--stop-timeout '${values['stop-timeout']}' is not a number of seconds between 0 and 3600.`,
          {
            field: 'stop-timeout',
            value: values['stop-timeout'],
          },
        )
      }
      stopTimeoutMs = seconds * 1000
    }
    return runLaunch(context, {
      image: positionals[0]!,
      via: options.via,
      readOnly: options.readOnly,
      policy: await policyFrom(context, values),
      checks: [baseDriftCheck(context, 'launch', values['accept-base'] ?? false)],
      machine: options.machine,
      headless: options.headless,
      extraArgs: extra,
      stopTimeoutMs,
      discardChanges: values['discard-changes'] ?? false,
      copyOnRead: values['copy-on-read'] ?? false,
      ...(options.format ? { format: options.format } : {}),
      ...(values.serial !== undefined ? { serialFile: values.serial } : {}),
      ...(values['control-socket'] !== undefined
        ? { controlSocket: values['control-socket'] }
        : {}),
    })
  },
})

/**
 * Run a VM until QEMU exits, as `addcow launch` does: the serial console on the terminal (or
 * a file), QEMU's messages on stderr, Ctrl-C powers the guest down. Returns QEMU's status.
 * `addcow machine start` runs saved machines through it.
 */
export async function runLaunch(
  context: CommandContext,
  options: Omit<LaunchOptions, 'signal' | 'onConsole' | 'onStderr' | 'onLog'> & {
    serialFile?: string
  },
): Promise<number> {
  const { serialFile, ...launch } = options
  const consoleFile = serialFile !== undefined ? await openConsoleFile(resolve(serialFile)) : null
  try {
    const vm = await launchVm({
      ...launch,
      library: context.library,
      signal: context.signal,
      onConsole: (chunk) => (consoleFile ?? context.stdout).write(chunk),
      onStderr: (chunk) => context.stderr.write(chunk),
      onLog: (event) => {
        if (event.level !== 'info')
          context.stderr.write(`addcow launch: export: ${event.message}\n`)
      },
    })
    const input = context.stdin
    const forward = (chunk: Buffer): void => vm.writeConsole(chunk)
    if (input?.isTTY) input.on('data', forward)
    context.stderr.write(
      `addcow launch: accelerator ${vm.accelerator.accel}: ${vm.accelerator.reason}.\n`,
    )
    context.stderr.write(
      `addcow launch: QEMU ${vm.pid} started (${vm.command.via}${vm.exportUri ? `, export ${vm.exportUri}` : ''}${vm.live?.live.copyOnRead ? ', copy-on-read' : ''}); Ctrl-C powers the guest down.\n`,
    )
    if (vm.controlSocket)
      context.stderr.write(`addcow launch: live commands on ${vm.controlSocket} (addcow job).\n`)
    const stopOnCancel = untilCancelled(context.signal).then(() => {
      if (context.signal.aborted) {
        context.stderr.write('addcow launch: powering the guest down.\n')
        return vm.stop()
      }
      return undefined
    })
    void stopOnCancel
    const exit = await vm.exited
    if (input?.isTTY) {
      input.off('data', forward)
      input.pause()
    }
    if (exit.signal) context.stderr.write(`addcow launch: QEMU was killed by ${exit.signal}.\n`)
    return exit.status
  } finally {
    if (consoleFile) await new Promise<void>((done) => consoleFile.end(() => done()))
  }
}
