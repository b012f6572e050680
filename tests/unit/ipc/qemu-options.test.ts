import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createOverlay } from '../../../main/engine/ops/create'
import { tempDir } from '../../helpers/tools'
import { call, patternFile, testCore, TRUSTED } from './helpers'

// The machine, network and display options of qemu:get-command and qemu:launch-vm (what the
// launch screen offers): each reaches the command line, explained, and a bad value is refused
// before any file is opened.

let cleanup: () => Promise<void>
let overlay: string
let core: ReturnType<typeof testCore>

beforeAll(async () => {
  const temp = await tempDir('addcow-ipc-qemu-options-')
  cleanup = temp.cleanup
  await patternFile(join(temp.path, 'base.raw'), 1024 * 1024)
  overlay = join(temp.path, 'vm.add-cow')
  await createOverlay({ overlay, backing: 'base.raw', backingFormat: 'raw' })
  core = testCore(join(temp.path, 'data'))
})
afterAll(async () => {
  await cleanup()
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
