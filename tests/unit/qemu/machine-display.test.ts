import { describe, expect, it } from 'vitest'
import { SavedMachineSchema } from '../../../shared/machine-types'
import { launchCommand } from '../../../main/qemu/launcher'
import { machineLaunchOptions } from '../../../main/qemu/machines'

// A saved machine whose display is the app's graphical console starts with the VNC socket in
// its run folder, as the Launch screen's "In the app" does (main/qemu/machines.ts).

describe('a saved machine with the in-app display', () => {
  it('is stored, and starts with -vnc unix: in its run folder and no -display', async () => {
    const machine = SavedMachineSchema.parse({
      name: 'console',
      disk: '/vm/disk.add-cow',
      display: 'app',
    })
    const options = await machineLaunchOptions(machine, '/data/machines/console')
    expect(options.inAppDisplay).toBe(true)
    expect(options.headless).toBe(false)
    const command = launchCommand(options, {
      binary: 'qemu-system-x86_64',
      arch: 'x86_64',
      accelerator: { accel: 'tcg', reason: 'test' },
      image: '/vm/disk.add-cow',
      runFolder: '/run/vm',
    })
    expect(command.args).toContain('unix:/run/vm/vnc.sock')
    expect(command.args[command.args.indexOf('unix:/run/vm/vnc.sock') - 1]).toBe('-vnc')
    expect(command.args).not.toContain('-display')
  })

  it('keeps headless machines without a screen', async () => {
    const machine = SavedMachineSchema.parse({ name: 'quiet', disk: '/vm/disk.add-cow' })
    const options = await machineLaunchOptions(machine, '/data/machines/console')
    expect(options.inAppDisplay).toBe(false)
    expect(options.headless).toBe(true)
  })
})
