import { chmod, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  probeAccelerator,
  probeKvm,
  qemuMessage,
  resolveAccelerator,
} from '../../../main/qemu/accelerator'
import { hostArch } from '../../../main/qemu/binaries'
import { buildQemuCommand } from '../../../main/qemu/command'
import { requireTools, tempDir } from '../../helpers/tools'

// The accelerator probe (main/qemu/accelerator.ts): KVM is chosen only when QEMU really ran a
// test guest with `-accel kvm -cpu host`; otherwise TCG, with QEMU's own message as the reason.
// The real QEMU proves the test guests work (under TCG they must run); small shell scripts
// stand in for a QEMU that aborts or hangs, which a working host cannot be made to do.

let folder: { path: string; cleanup: () => Promise<void> }
/** A file that opens read-write, standing in for a /dev/kvm that opens. */
let openableDevice: string
/** A QEMU that aborts the way a broken nested KVM does. */
let abortingQemu: string
/** A QEMU that starts and never answers. */
let hangingQemu: string

beforeAll(async () => {
  folder = await tempDir('addcow-accel-')
  openableDevice = join(folder.path, 'kvm')
  await writeFile(openableDevice, '')
  abortingQemu = join(folder.path, 'qemu-aborts')
  await writeFile(
    abortingQemu,
    '#!/bin/sh\n' +
      'echo "qemu-system-x86_64: warning: host doesn\'t support requested feature" >&2\n' +
      'echo "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69" >&2\n' +
      'kill -ABRT $$\n',
  )
  await chmod(abortingQemu, 0o755)
  hangingQemu = join(folder.path, 'qemu-hangs')
  await writeFile(hangingQemu, '#!/bin/sh\nexec sleep 60\n')
  await chmod(hangingQemu, 0o755)
})
afterAll(async () => folder.cleanup())

describe('probeAccelerator on the real QEMU', () => {
  it('runs its test guest under TCG, by the debug-exit firmware and by QMP', async () => {
    if (!requireTools('qemu-system-x86_64')) return
    for (const method of ['guest', 'qmp'] as const) {
      const probe = await probeAccelerator({
        binary: 'qemu-system-x86_64',
        arch: 'x86_64',
        accel: 'tcg',
        method,
        timeoutMs: 20_000,
      })
      expect({ method, ...probe }).toEqual({ method, usable: true, detail: 'a test guest ran' })
    }
  })

  it("reports QEMU's own message when QEMU refuses to start", async () => {
    if (!requireTools('qemu-system-x86_64')) return
    for (const method of ['guest', 'qmp'] as const) {
      const probe = await probeAccelerator({
        binary: 'qemu-system-x86_64',
        arch: 'x86_64',
        accel: 'tcg',
        machine: 'no-such-machine',
        method,
      })
      expect(probe.usable).toBe(false)
      expect(probe.detail).toMatch(/unsupported machine type.*QEMU exited with status 1/)
    }
  })
})

describe('probeAccelerator on a QEMU that fails', () => {
  it('keeps the message of a QEMU that aborts, without its warnings', async () => {
    for (const method of ['guest', 'qmp'] as const) {
      const probe = await probeAccelerator({
        binary: abortingQemu,
        arch: 'x86_64',
        accel: 'kvm',
        cpu: 'host',
        method,
      })
      expect(probe).toEqual({
        usable: false,
        detail: 'error: failed to set MSR 0x10a to 0x69 (QEMU was killed by SIGABRT)',
      })
    }
  })

  it('gives up on a QEMU that never runs the guest', async () => {
    for (const method of ['guest', 'qmp'] as const) {
      const probe = await probeAccelerator({
        binary: hangingQemu,
        arch: 'x86_64',
        accel: 'kvm',
        method,
        timeoutMs: 300,
      })
      expect(probe.usable).toBe(false)
      expect(probe.detail).toMatch(/within 0.3 s/)
    }
  })

  it('says when the binary cannot be started', async () => {
    const probe = await probeAccelerator({
      binary: join(folder.path, 'missing-qemu'),
      arch: 'x86_64',
      accel: 'kvm',
    })
    expect(probe.usable).toBe(false)
    expect(probe.detail).toMatch(/cannot start .*missing-qemu.*ENOENT/)
  })

  it('strips the program name and puts the lines on one line', () => {
    expect(
      qemuMessage(
        'qemu-system-x86_64: warning: w\nqemu-system-x86_64: error: e\n../kvm.c:1: assertion failed.\n',
      ),
    ).toBe('error: e; ../kvm.c:1: assertion failed.')
    expect(qemuMessage('qemu-system-x86_64: warning: only this\n')).toBe('warning: only this')
    expect(qemuMessage('x'.repeat(1000)).length).toBe(300)
  })
})

describe('resolveAccelerator', () => {
  it('uses TCG and says why when KVM is present but QEMU fails on it', async () => {
    const choice = await resolveAccelerator('auto', hostArch(), {
      binary: abortingQemu,
      device: openableDevice,
    })
    expect(choice).toEqual({
      accel: 'tcg',
      reason:
        'KVM is present but failed: error: failed to set MSR 0x10a to 0x69 (QEMU was killed by SIGABRT); using TCG',
    })
    // The reason reaches the command line's explanation of -accel.
    const command = buildQemuCommand({
      accel: choice.accel,
      accelReason: choice.reason,
      disk: { via: 'raw', path: '/x.raw' },
    })
    const accel = command.explained.find((group) => group.args[0] === '-accel')
    expect(accel?.args).toEqual(['-accel', 'tcg'])
    expect(accel?.explanation).toContain(choice.reason)
    expect(command.rendering).toContain('failed to set MSR 0x10a')
  })

  it('probes once per process for a binary', async () => {
    const first = probeKvm(hangingQemu, hostArch(), { device: openableDevice, timeoutMs: 300 })
    const second = probeKvm(hangingQemu, hostArch(), { device: openableDevice, timeoutMs: 300 })
    expect(second).toBe(first)
    expect((await first).usable).toBe(false)
  })

  it('uses TCG when the device does not open, naming it', async () => {
    const choice = await resolveAccelerator('auto', hostArch(), {
      binary: abortingQemu,
      device: join(folder.path, 'no-kvm'),
    })
    expect(choice.accel).toBe('tcg')
    expect(choice.reason).toMatch(/^KVM is not available: .*no-kvm cannot be opened .*ENOENT/)
  })

  it('keeps an explicit choice, and uses TCG for another architecture', async () => {
    expect((await resolveAccelerator('kvm', hostArch(), { binary: abortingQemu })).accel).toBe(
      'kvm',
    )
    expect((await resolveAccelerator('tcg')).accel).toBe('tcg')
    const other = hostArch() === 'x86_64' ? 'aarch64' : 'x86_64'
    const choice = await resolveAccelerator('auto', other)
    expect(choice.accel).toBe('tcg')
    expect(choice.reason).toContain(other)
  })

  it('on this host: KVM only when a guest runs on it, else the reason says what failed', async () => {
    if (!requireTools('qemu-system-x86_64') || hostArch() !== 'x86_64') return
    const choice = await resolveAccelerator('auto')
    if (choice.accel === 'kvm') {
      expect(choice.reason).toMatch(/test guest ran/)
      const probe = await probeAccelerator({
        binary: 'qemu-system-x86_64',
        arch: 'x86_64',
        accel: 'kvm',
        cpu: 'host',
      })
      expect(probe.usable).toBe(true)
    } else {
      expect(choice.reason).toMatch(/^KVM is (not available|present but failed): .+; using TCG$/)
    }
  })
})
