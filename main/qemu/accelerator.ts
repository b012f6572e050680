import { spawn } from 'node:child_process'
import { constants } from 'node:fs'
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { findQemuBinary, hostArch } from './binaries'
import { defaultMachine } from './command'

/** The accelerator a VM gets, and in plain words why. */
export interface AcceleratorChoice {
  accel: 'kvm' | 'tcg'
  /** One sentence, shown beside `-accel` in the command line and in the Launch view. */
  reason: string
}

/** What a probe found: whether QEMU ran a guest with that accelerator, and why not. */
export interface AcceleratorProbe {
  usable: boolean
  /** QEMU's own message (or what went wrong) when not usable; a short summary when usable. */
  detail: string
}

/** Options of {@link probeAccelerator}. */
export interface ProbeOptions {
  binary: string
  arch: string
  accel: 'kvm' | 'tcg'
  /** `-cpu` value (the launcher uses `host` with KVM); default: QEMU's. */
  cpu?: string
  /** Machine type; default the architecture's default. */
  machine?: string
  /** How long the test guest gets (default 5 s). */
  timeoutMs?: number
  /**
   * `guest` (x86 only): run a 64 KiB firmware whose first instructions write to the
   * isa-debug-exit port, so QEMU exits with a known status once the vCPU really ran. `qmp`:
   * start paused with QMP on stdio, `cont`, and ask `query-status` twice. Default: `guest` on
   * x86, `qmp` elsewhere.
   */
  method?: 'guest' | 'qmp'
}

/** Time the test guest gets by default; a broken KVM either aborts at once or never runs. */
const PROBE_TIMEOUT_MS = 5000
/** The value the test firmware writes to port 0xf4: QEMU then exits with (v << 1) | 1. */
const PROBE_EXIT_VALUE = 0x2a
/** Longest QEMU message kept in a reason. */
const MAX_DETAIL = 300

/**
 * A 64 KiB x86 firmware image (QEMU wants a multiple of 64 KiB for -bios). The CPU starts at
 * physical 0xFFFFFFF0, the image's last 16 bytes: `mov al, 0x2a; out 0xf4, al; hlt; jmp $`.
 */
function probeFirmware(): Buffer {
  const image = Buffer.alloc(64 * 1024)
  Buffer.from([0xb0, PROBE_EXIT_VALUE, 0xe6, 0xf4, 0xf4, 0xeb, 0xfe]).copy(image, image.length - 16)
  return image
}

/** QEMU's messages without its `qemu-system-x86_64: ` prefixes and warnings, on one line. */
export function qemuMessage(stderr: string): string {
  const lines = stderr
    .split('\n')
    .map((line) => line.replace(/^qemu-system-[a-z0-9_]+: /, '').trim())
    .filter((line) => line !== '')
  const errors = lines.filter((line) => !/^warning:/i.test(line))
  const text = (errors.length > 0 ? errors : lines).join('; ')
  return text.length > MAX_DETAIL ? `${text.slice(0, MAX_DETAIL - 1)}…` : text
}

function exitText(code: number | null, signal: NodeJS.Signals | null): string {
  return signal ? `QEMU was killed by ${signal}` : `QEMU exited with status ${code}`
}

/**
 * Start QEMU once with an accelerator and see whether a guest really runs on it. Opening
 * /dev/kvm is not enough: some hosts (nested virtualisation) open it, then QEMU aborts when it
 * sets the vCPU's registers ("failed to set MSR"), or the vCPU never runs.
 */
export async function probeAccelerator(options: ProbeOptions): Promise<AcceleratorProbe> {
  const x86 = options.arch === 'x86_64' || options.arch === 'i386'
  const method = options.method ?? (x86 ? 'guest' : 'qmp')
  const timeoutMs = options.timeoutMs ?? PROBE_TIMEOUT_MS
  const base = [
    '-machine',
    options.machine ?? defaultMachine(options.arch),
    '-accel',
    options.accel,
    ...(options.cpu !== undefined ? ['-cpu', options.cpu] : []),
    '-m',
    '16',
    '-display',
    'none',
    '-nodefaults',
    '-no-user-config',
  ]
  if (method === 'guest') {
    const folder = await mkdtemp(join(tmpdir(), 'addcow-probe-'))
    try {
      const firmware = join(folder, 'probe.bin')
      await writeFile(firmware, probeFirmware())
      const args = [...base, '-bios', firmware, '-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04']
      const run = await runQemu(options.binary, args, timeoutMs, null)
      if (run.error) return { usable: false, detail: run.error }
      if (run.code === ((PROBE_EXIT_VALUE << 1) | 1)) {
        return { usable: true, detail: 'a test guest ran' }
      }
      if (run.timedOut)
        return {
          usable: false,
          detail: `a test guest did not run within ${timeoutMs / 1000} s${run.stderr ? ` (${qemuMessage(run.stderr)})` : ''}`,
        }
      const message = qemuMessage(run.stderr)
      return {
        usable: false,
        detail: `${message !== '' ? `${message} ` : ''}(${exitText(run.code, run.signal)})`,
      }
    } finally {
      await rm(folder, { recursive: true, force: true })
    }
  }
  const run = await runQemu(options.binary, [...base, '-S', '-qmp', 'stdio'], timeoutMs, qmpScript)
  if (run.error) return { usable: false, detail: run.error }
  if (run.qmpOk) return { usable: true, detail: 'a test guest ran' }
  if (run.qmpFailure !== null) return { usable: false, detail: run.qmpFailure }
  if (run.timedOut)
    return {
      usable: false,
      detail: `QEMU did not answer QMP within ${timeoutMs / 1000} s${run.stderr ? ` (${qemuMessage(run.stderr)})` : ''}`,
    }
  const message = qemuMessage(run.stderr)
  return {
    usable: false,
    detail: `${message !== '' ? `${message} ` : ''}(${exitText(run.code, run.signal)})`,
  }
}

interface QemuRun {
  code: number | null
  signal: NodeJS.Signals | null
  stderr: string
  timedOut: boolean
  /** The spawn failed (no such binary...). */
  error: string | null
  /** The QMP script saw the guest running. */
  qmpOk: boolean
  /** What the QMP script saw instead. */
  qmpFailure: string | null
}

/** A QMP answer to send next, the end of the dialogue, or nothing (an event). */
type QmpStep = { send: string; delayMs: number } | { done: true; failure: string | null } | null

/**
 * A QMP dialogue on stdio: capabilities, cont, query-status (running), 20 ms later
 * query-status again (still running, not internal-error), then quit. Fed with each message.
 */
function qmpScript(): (message: Record<string, unknown>) => QmpStep {
  let step = 0
  return (message) => {
    if ('QMP' in message) {
      step = 1
      return { send: '{"execute":"qmp_capabilities"}', delayMs: 0 }
    }
    if ('error' in message) {
      const error = message.error as { desc?: unknown } | undefined
      return { done: true, failure: `QMP error: ${String(error?.desc ?? 'unknown')}` }
    }
    if (!('return' in message)) return null
    step += 1
    if (step === 2) return { send: '{"execute":"cont"}', delayMs: 0 }
    if (step === 3) return { send: '{"execute":"query-status"}', delayMs: 0 }
    const status = (message.return as { status?: unknown } | undefined)?.status
    if (status !== 'running')
      return { done: true, failure: `the guest's status is ${String(status)}, not running` }
    if (step === 4) return { send: '{"execute":"query-status"}', delayMs: 20 }
    return { done: true, failure: null }
  }
}

function runQemu(
  binary: string,
  args: string[],
  timeoutMs: number,
  script: (() => ReturnType<typeof qmpScript>) | null,
): Promise<QemuRun> {
  return new Promise((resolve) => {
    const child = spawn(binary, args, { stdio: ['pipe', 'pipe', 'pipe'] })
    let stderr = ''
    let timedOut = false
    let qmpOk = false
    let qmpFailure: string | null = null
    let settled = false
    let scriptDone = false
    const finish = (run: Omit<QemuRun, 'stderr' | 'timedOut' | 'qmpOk' | 'qmpFailure'>): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      resolve({ ...run, stderr, timedOut, qmpOk, qmpFailure })
    }
    const timer = setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, timeoutMs)
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (text: string) => {
      if (stderr.length < 64 * 1024) stderr += text
    })
    child.stdin.on('error', () => undefined)
    if (script) {
      const next = script()
      let buffer = ''
      child.stdout.setEncoding('utf8')
      child.stdout.on('data', (text: string) => {
        buffer += text
        if (buffer.length > 1024 * 1024) child.kill('SIGKILL')
        for (;;) {
          const end = buffer.indexOf('\n')
          if (end < 0) break
          const line = buffer.slice(0, end).trim()
          buffer = buffer.slice(end + 1)
          let message: unknown
          try {
            message = JSON.parse(line)
          } catch {
            continue
          }
          if (typeof message !== 'object' || message === null) continue
          if (scriptDone) continue
          const answer = next(message as Record<string, unknown>)
          if (answer === null) continue
          if ('done' in answer) {
            scriptDone = true
            qmpOk = answer.failure === null
            qmpFailure = answer.failure
            child.stdin.write('{"execute":"quit"}\n')
          } else {
            setTimeout(() => child.stdin.write(answer.send + '\n'), answer.delayMs)
          }
        }
      })
    } else {
      child.stdout.resume()
    }
    child.once('error', (error) =>
      finish({
        code: null,
        signal: null,
        error: `cannot start ${binary}: ${error.message}`,
      }),
    )
    child.once('close', (code, signal) => finish({ code, signal, error: null }))
  })
}

/** Probes already made in this process, by binary and architecture. */
const kvmProbes = new Map<string, Promise<AcceleratorProbe>>()

/**
 * Whether KVM works for `binary` on this host, probed once per process: /dev/kvm must open
 * read-write, and QEMU must run a test guest with `-accel kvm -cpu host` (what the launcher
 * uses).
 */
export function probeKvm(
  binary: string,
  arch: string,
  options: { device?: string; timeoutMs?: number } = {},
): Promise<AcceleratorProbe> {
  const key = `${binary}\0${arch}\0${options.device ?? ''}`
  let probe = kvmProbes.get(key)
  if (!probe) {
    probe = (async (): Promise<AcceleratorProbe> => {
      const device = await openDevice(options.device ?? '/dev/kvm')
      if (device !== null) return { usable: false, detail: device }
      return probeAccelerator({
        binary,
        arch,
        accel: 'kvm',
        cpu: 'host',
        ...(options.timeoutMs !== undefined ? { timeoutMs: options.timeoutMs } : {}),
      })
    })()
    kvmProbes.set(key, probe)
  }
  return probe
}

/** Null when the device opens read-write (as QEMU opens it), else why not. */
async function openDevice(device: string): Promise<string | null> {
  try {
    const handle = await open(device, constants.O_RDWR)
    await handle.close()
    return null
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error)
    return `${device} cannot be opened for reading and writing (${code})`
  }
}

/**
 * Resolve 'auto' to KVM when a test guest runs on it with this QEMU, else TCG, and say why.
 * An explicit 'kvm' or 'tcg' is kept as asked. `binary` defaults to qemu-system-ARCH on PATH.
 */
export async function resolveAccelerator(
  accel: 'auto' | 'kvm' | 'tcg' = 'auto',
  arch: string = hostArch(),
  options: { binary?: string; device?: string; timeoutMs?: number } = {},
): Promise<AcceleratorChoice> {
  if (accel !== 'auto') return { accel, reason: `chosen explicitly (accelerator ${accel})` }
  if (arch !== hostArch()) {
    return {
      accel: 'tcg',
      reason: `KVM runs only guests of the host's architecture (${hostArch()}), not ${arch}; using TCG`,
    }
  }
  const device = await openDevice(options.device ?? '/dev/kvm')
  if (device !== null) return { accel: 'tcg', reason: `KVM is not available: ${device}; using TCG` }
  const binary = options.binary ?? (await findQemuBinary(arch))?.path
  if (binary === undefined) {
    return {
      accel: 'kvm',
      reason: `${options.device ?? '/dev/kvm'} opens, but no qemu-system-${arch} was found to test KVM with`,
    }
  }
  const probe = await probeKvm(binary, arch, options)
  return probe.usable
    ? { accel: 'kvm', reason: 'KVM works here (a test guest ran with -cpu host)' }
    : { accel: 'tcg', reason: `KVM is present but failed: ${probe.detail}; using TCG` }
}
