import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { beforeAll, describe, expect, it } from 'vitest'
import { requireTools } from '../../../helpers/tools'
import {
  call,
  core,
  dir,
  finished,
  overlayOn,
  patternFile,
  runJob,
  TRUSTED,
  useIpcFolder,
} from '../helpers'

// The qemu:* channels (main/ipc/handlers/qemu.ts): the command line with the machine, network
// and display options the launch screen offers (each reaches the command line, explained; a bad
// value is refused before any file is opened), and a VM booted by QEMU on an overlay, its
// serial console arriving as events.

const BOOT_SECTOR = fileURLToPath(new URL('../../../fixtures/boot/boot.bin', import.meta.url))
const MIB = 1024 * 1024
let overlay: string

useIpcFolder('addcow-ipc-qemu-', { vmStopTimeoutMs: 500 })
beforeAll(async () => {
  await patternFile(join(dir, 'base.raw'), MIB)
  overlay = await overlayOn('.', 'vm.add-cow')
})

/** The values that follow `option` in an argument array. */
function valuesOf(args: string[], option: string): string[] {
  return args.flatMap((arg, index) => (arg === option ? [args[index + 1] ?? ''] : []))
}

describe('qemu:get-command machine options', () => {
  it('puts the machine type, the network and the display on the command line', async () => {
    const command = await call(core, 'qemu:get-command', {
      path: overlay,
      machine: 'pc',
      network: 'none',
      display: 'vnc',
    })
    expect(valuesOf(command.args, '-machine')).toEqual(['pc'])
    expect(valuesOf(command.args, '-nic')).toEqual(['none'])
    // VNC listens on loopback only.
    expect(valuesOf(command.args, '-display')).toEqual(['vnc=127.0.0.1:0'])
    expect(command.explained.map((group) => group.explanation)).toContain('no network card')
  })

  it('keeps the defaults when no option is given, and headless wins over a display', async () => {
    const plain = await call(core, 'qemu:get-command', { path: overlay })
    expect(valuesOf(plain.args, '-nic')).toEqual(['user,model=virtio-net-pci'])
    expect(valuesOf(plain.args, '-display')).toEqual([])
    const headless = await call(core, 'qemu:get-command', {
      path: overlay,
      headless: true,
      display: 'gtk',
    })
    expect(valuesOf(headless.args, '-display')).toEqual(['none'])
  })

  it("gives the in-app display a VNC Unix socket in the VM's private folder, never TCP", async () => {
    const command = await call(core, 'qemu:get-command', { path: overlay, display: 'app' })
    const [vnc] = valuesOf(command.args, '-vnc')
    expect(vnc).toMatch(/^unix:\/.*\/addcow-vm-vm\.add-cow-[0-9a-f]{12}\/vnc\.sock$/)
    // Beside the QMP socket, in the same 0700 folder.
    const [qmp] = valuesOf(command.args, '-qmp')
    expect(qmp!.replace(/^unix:/, '').replace(/qmp\.sock.*$/, '')).toBe(
      vnc!.replace(/^unix:/, '').replace(/vnc\.sock$/, ''),
    )
    expect(valuesOf(command.args, '-display')).toEqual([])
    const headless = await call(core, 'qemu:get-command', {
      path: overlay,
      display: 'app',
      headless: true,
    })
    expect(valuesOf(headless.args, '-vnc')).toEqual([])
    expect(valuesOf(headless.args, '-display')).toEqual(['none'])
  })

  it('refuses a machine type that is not a plain name, and an unknown display', async () => {
    for (const request of [
      { path: overlay, machine: 'q35,accel=kvm -drive file=/etc/shadow' },
      { path: overlay, display: 'vnc=0.0.0.0:0' },
      { path: overlay, network: 'bridge' },
    ]) {
      const result = await core.dispatcher.dispatch('qemu:get-command', request, TRUSTED)
      expect(result).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } })
    }
  })
})

describe('qemu:get-command copy-on-read', () => {
  it('serves the disk with --copy-on-read (the export line says so) and refuses it read-only', async () => {
    const command = await call(core, 'qemu:get-command', { path: overlay, copyOnRead: true })
    expect(command.prerequisite?.args).toEqual([
      'addcow',
      'serve',
      '--socket',
      expect.stringMatching(/nbd\.sock$/),
      '--copy-on-read',
      overlay,
    ])
    expect(command.rendering).toContain('--copy-on-read')
    const plain = await call(core, 'qemu:get-command', { path: overlay })
    expect(plain.prerequisite?.args).not.toContain('--copy-on-read')
    const refused = await core.dispatcher.dispatch(
      'qemu:get-command',
      { path: overlay, copyOnRead: true, readOnly: true },
      TRUSTED,
    )
    expect(refused).toMatchObject({
      ok: false,
      error: {
        code: 'BAD_ARGUMENT',
        message:
          'Copy-on-read writes what the guest reads into the image; it cannot go with a read-only disk.',
      },
    })
  })
})

describe('qemu:get-capabilities', () => {
  it('offers only what this QEMU and host can do, with the reason for the rest', async () => {
    if (!requireTools('qemu-system-x86_64')) return
    const capabilities = await call(core, 'qemu:get-capabilities', {})
    expect(capabilities.binary).toMatch(/qemu-system-x86_64$/)
    expect(capabilities.displays.none).toEqual({ available: true, reason: null })
    expect(capabilities.displays.app).toEqual({ available: true, reason: null })
    // The browser mode: a window would open where QEMU runs, not where the user is.
    expect(capabilities.defaultDisplay).toBe('app')
    const desktop = Boolean(process.env.DISPLAY || process.env.WAYLAND_DISPLAY)
    if (!desktop) {
      // Headless host (the browser mode's usual case): no window is offered, the graphical
      // console in the app is the default.
      expect(capabilities.displays.default.available).toBe(false)
      expect(capabilities.displays.default.reason).toMatch(/desktop|display/i)
      expect(capabilities.defaultDisplay).toBe('app')
    }
    for (const offer of [capabilities.nativeAddCow, ...Object.values(capabilities.displays)]) {
      expect(offer.available === (offer.reason === null)).toBe(true)
    }
    if (!capabilities.nativeAddCow.available)
      expect(capabilities.nativeAddCow.reason).toMatch(/no add-cow driver/)
    expect(capabilities.accelerator.reason.length).toBeGreaterThan(10)
  })
})

describe('qemu:launch-vm, qemu:stop-vm and qemu:write-console', () => {
  it('boots QEMU on an overlay: the console arrives as events, the writes land in the overlay', async () => {
    if (!requireTools('qemu-system-x86_64')) return
    await mkdir(join(dir, 'vm'))
    const base = join(dir, 'vm', 'base.raw')
    const disk = Buffer.alloc(2 * MIB)
    ;(await readFile(BOOT_SECTOR)).copy(disk, 0)
    await writeFile(base, disk)
    const overlay = await overlayOn('vm', 'boot.add-cow')

    const command = await call(core, 'qemu:get-command', { path: overlay, headless: true })
    expect(command.via).toBe('nbd')
    expect(command.args).toContain('-display')
    expect(command.rendering).toContain(command.binary)

    const { job } = await call(core, 'qemu:launch-vm', {
      path: overlay,
      headless: true,
      memoryMiB: 64,
      extraArgs: ['-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04'],
    })
    const result = (await runJob(job)) as { exit: { status: number } }
    const console = core.events
      .filter((entry) => entry.event === 'qemu:console-output')
      .map((entry) => entry.payload as { sessionId: string; stream: string; text: string })
      .filter((entry) => entry.sessionId === job.id && entry.stream === 'serial')
      .map((entry) => entry.text)
      .join('')
    expect(console).toContain('addcow boot test: sector 2048 written through int 13h')
    // Main keeps it for a page opened later (a reload), also after the VM ended.
    const kept = await call(core, 'qemu:get-console', { jobId: job.id })
    expect(kept.state).toBeNull()
    expect(
      kept.chunks
        .filter((chunk) => chunk.stream === 'serial')
        .map((chunk) => chunk.text)
        .join(''),
    ).toBe(console)
    expect(result.exit.status).toBe(33)
    // The guest wrote sector 2048 (1 MiB) of its disk: into the overlay, never the base.
    expect((await readFile(base)).subarray(MIB, MIB + 16)).toEqual(Buffer.alloc(16))
    const map = await call(core, 'image:get-map', { path: overlay })
    expect(
      map.extents.find(
        (extent) => extent.depth === 0 && extent.start <= MIB && extent.start + extent.length > MIB,
      ),
    ).toBeDefined()
  })

  it('runs the command it showed, byte for byte (/proc/PID/cmdline), and Force off ends it', async () => {
    if (!requireTools('qemu-system-x86_64')) return
    const request = {
      path: overlay,
      headless: true,
      memoryMiB: 64,
      network: 'none' as const,
      // Paused: the guest does nothing, so only Force off (or the stop timeout) ends it.
      extraArgs: ['-S'],
    }
    const shown = await call(core, 'qemu:get-command', request)
    const { job } = await call(core, 'qemu:launch-vm', request)
    let pid = 0
    while (pid === 0) {
      const info = (await call(core, 'jobs:list-jobs', {})).jobs.find(
        (entry) => entry.id === job.id,
      )
      if (info?.state !== 'running') throw new Error(`the VM job ended: ${JSON.stringify(info)}`)
      const match = /QEMU pid (\d+)/.exec(info.detail ?? '')
      if (match) pid = Number(match[1])
      else await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const executed = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').slice(0, -1)
    expect(executed).toEqual([shown.binary, ...shown.args])
    expect(shown.args).toContain('-qmp')

    expect(await call(core, 'qemu:stop-vm', { jobId: job.id, force: true })).toEqual({
      stopping: true,
    })
    const outcome = await finished(core, job)
    expect(outcome.event).toBe('jobs:done')
    // QMP quit: QEMU exits by itself (status 0), not by a signal.
    expect(
      (outcome as { result: { exit: { status: number; signal: string | null } } }).result.exit,
    ).toMatchObject({ status: 0, signal: null })
  })

  it('pauses, resumes, resets and shuts down a VM through QMP, with the state as events', async () => {
    if (!requireTools('qemu-system-x86_64')) return
    await mkdir(join(dir, 'power'))
    const disk = Buffer.alloc(2 * MIB)
    ;(await readFile(BOOT_SECTOR)).copy(disk, 0)
    await writeFile(join(dir, 'power', 'base.raw'), disk)
    const halted = await overlayOn('power', 'halted.add-cow')
    // -S: QEMU starts paused, as query-status tells.
    const { job } = await call(core, 'qemu:launch-vm', {
      path: halted,
      headless: true,
      memoryMiB: 64,
      network: 'none',
      extraArgs: ['-S'],
    })
    const events = () =>
      core.events
        .filter((entry) => entry.event === 'qemu:vm-state')
        .map((entry) => entry.payload as { sessionId: string; state: string; screen: boolean })
        .filter((entry) => entry.sessionId === job.id)
    const states = (): string[] => events().map((entry) => entry.state)
    while (states().length === 0) await new Promise((resolve) => setTimeout(resolve, 50))
    expect(states()).toEqual(['paused'])
    const power = (action: 'pause' | 'resume' | 'reset' | 'shut-down') =>
      call(core, 'qemu:power-vm', { jobId: job.id, action })
    expect(await power('resume')).toEqual({ state: 'running' })
    expect(await power('pause')).toEqual({ state: 'paused' })
    // A reset keeps a paused VM paused.
    expect(await power('reset')).toEqual({ state: 'paused' })
    expect(await power('resume')).toEqual({ state: 'running' })
    expect(await power('reset')).toEqual({ state: 'running' })
    // The ACPI button: the boot sector ignores it, so the VM stays up, shutting down.
    expect(await power('shut-down')).toEqual({ state: 'shutting-down' })
    expect(states()).toEqual(['paused', 'running', 'paused', 'running', 'shutting-down'])
    await call(core, 'qemu:stop-vm', { jobId: job.id, force: true })
    await finished(core, job)
    expect(states().at(-1)).toBe('stopped')
    // Headless: no screen to open.
    expect(events().every((entry) => entry.screen === false)).toBe(true)
    expect(
      await core.dispatcher.dispatch('qemu:power-vm', { jobId: job.id, action: 'pause' }, TRUSTED),
    ).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
  })

  it("fails the launch with QEMU's own message when QEMU dies before the guest runs", async () => {
    if (!requireTools('qemu-system-x86_64')) return
    const { job } = await call(core, 'qemu:launch-vm', {
      path: overlay,
      headless: true,
      memoryMiB: 64,
      extraArgs: ['-device', 'no-such-device-model'],
    })
    const outcome = await finished(core, job)
    expect(outcome.event).toBe('jobs:failed')
    expect(outcome.job.error?.message).toMatch(
      /^QEMU exited with status 1 before the guest ran: .*no-such-device-model/,
    )
  })

  it('refuses to stop or type into a job that is not a VM', async () => {
    const { job } = await call(core, 'operations:compare-images', {
      a: join(dir, 'base.raw'),
      b: join(dir, 'base.raw'),
    })
    await finished(core, job)
    expect(
      await core.dispatcher.dispatch('qemu:stop-vm', { jobId: job.id }, TRUSTED),
    ).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
    expect(
      await core.dispatcher.dispatch('qemu:write-console', { jobId: job.id, text: 'x' }, TRUSTED),
    ).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
    expect(
      await core.dispatcher.dispatch('qemu:get-console', { jobId: job.id }, TRUSTED),
    ).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
  })
})

describe('qemu:export-command', () => {
  it('exports the command on screen as a shell script and as a libvirt domain on the same socket', async () => {
    const request = { path: overlay, memoryMiB: 128, headless: true, extraArgs: ['-no-reboot'] }
    const command = await call(core, 'qemu:get-command', request)
    const script = await call(core, 'qemu:export-command', { ...request, as: 'script' })
    expect(script.fileName).toBe('vm.add-cow.sh')
    expect(script.text).toMatch(/^#!\/bin\/sh\n/)
    // The script runs exactly the argv shown, and serves on the socket QEMU is pointed at.
    const socket = command.prerequisite!.args[3]!
    expect(script.text).toContain(`"$ADDCOW" serve --socket ${socket} ${overlay} >"$ready" &`)
    expect(script.text).toContain(`  -m 128 \\\n`)
    expect(script.text).toContain(`  -no-reboot\nexit $?\n`)
    const xml = await call(core, 'qemu:export-command', { ...request, as: 'libvirt' })
    expect(xml.fileName).toBe('vm.add-cow.libvirt.xml')
    expect(xml.text).toContain(`<host transport='unix' socket='${socket}'/>`)
    expect(xml.text).toContain("<memory unit='MiB'>128</memory>")
  })

  it('refuses an unknown export kind before any file is opened', async () => {
    const result = await core.dispatcher.dispatch(
      'qemu:export-command',
      { path: overlay, as: 'vmx' },
      TRUSTED,
    )
    expect(result).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } })
  })
})
