import { describe, expect, it } from 'vitest'
import { SavedMachineSchema } from '../../../../shared/machine-types'
import {
  bootText,
  copyName,
  machineForm,
  machineInput,
  newMachineForm,
  type MachineView,
} from '../../../../renderer/src/lib/machine-view'

// The machine form and the saved machine (renderer/src/lib/machine-view.ts): a saved machine
// edited without change saves as itself; every field the form cannot turn into a machine is
// named in one sentence; copies get a free name.

const SAVED: MachineView = {
  ...SavedMachineSchema.parse({
    name: 'dev',
    disk: '/images/dev.add-cow',
    memoryMiB: 512,
    cpus: 1,
    machine: 'pc',
    firmware: 'uefi',
    uefiCode: '/usr/share/OVMF/OVMF_CODE_4M.fd',
    boot: {
      kind: 'kernel',
      kernel: '/boot/vmlinuz',
      initrd: '/boot/initrd',
      cmdline: 'console=ttyS0',
    },
    network: 'user',
    portForwards: [
      { protocol: 'tcp', hostPort: 2222, guestPort: 22 },
      { protocol: 'udp', hostAddress: '127.0.0.1', hostPort: 5353, guestPort: 53 },
    ],
    display: 'vnc',
    accel: 'tcg',
    readOnly: true,
    extraArgs: ['-device', 'isa-debug-exit,iobase=0xf4', "it's quoted"],
  }),
  runningJob: null,
}

describe('the machine form', () => {
  it('turns a saved machine into a form and back without change', () => {
    const built = machineInput(machineForm(SAVED))
    if ('error' in built) throw new Error(built.error)
    const { runningJob: _running, ...saved } = SAVED
    void _running
    expect(SavedMachineSchema.parse(built.machine)).toEqual(saved)
  })

  it.each([
    [{ name: '' }, 'Give the machine a name.'],
    [{ name: '-x' }, "The name '-x' is not a machine name"],
    [{ disk: 'dev.add-cow' }, "The disk image 'dev.add-cow' is not an absolute path."],
    [
      { portForwards: 'tcp:2222' },
      "The port forward 'tcp:2222' is not PROTOCOL:HOSTPORT:GUESTPORT",
    ],
    [{ portForwards: 'tcp:70000:22' }, "The port forward 'tcp:70000:22'"],
    [{ boot: { ...machineForm(SAVED).boot, kind: 'cdrom' as const } }, 'Choose the CD-ROM image.'],
    [{ launch: { ...machineForm(SAVED).launch, extraArgs: "'open" } }, 'never closed'],
  ])('names what is wrong: %o', (change, sentence) => {
    const built = machineInput({ ...machineForm(SAVED), ...change })
    expect('error' in built ? built.error : '').toContain(sentence)
  })

  it('starts a new machine headless, booting its disk, and drops forwards without a network', () => {
    const form = { ...newMachineForm('/images/a.raw'), name: 'a', portForwards: 'tcp:2222:22' }
    form.launch = { ...form.launch, network: 'none' }
    const built = machineInput(form)
    expect(built).toMatchObject({
      machine: { display: 'none', boot: { kind: 'disk' }, network: 'none', portForwards: [] },
    })
  })

  it('says what boots, and finds a free name for a copy', () => {
    expect(bootText(SAVED.boot)).toBe('kernel vmlinuz')
    expect(bootText({ kind: 'cdrom', iso: '/isos/debian.iso' })).toBe('CD-ROM debian.iso')
    expect(copyName('dev', ['dev'])).toBe('dev-copy')
    expect(copyName('dev', ['dev', 'dev-copy', 'dev-copy-2'])).toBe('dev-copy-3')
    expect(copyName('x'.repeat(64), []).length).toBeLessThanOrEqual(64)
  })
})
