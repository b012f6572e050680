// The power controls' "Shut down" is the ACPI power button (QMP system_powerdown), and the
// guest decides. A real Linux guest (a Debian kernel unpacked from its .deb, a busybox
// initramfs with the ACPI button and evdev drivers) waits for the button's key on its input
// device and powers off, so QEMU exits by itself; the VM goes running → shutting down →
// stopped. The e2e test (launch-display.spec.ts) covers a guest that ignores the button.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { createOverlay } from '../../../main/engine/ops/create'
import { launchVm } from '../../../main/qemu/launcher'
import type { VmState } from '../../../main/qemu/power'
import { kernelArgs, linuxGuestSuite } from '../../helpers/linux-guest'

// Wait for a key from every "Power Button" input device (q35 has the ACPI fixed button; a
// PNP0C0C one may exist too), then let /init power off. The shell opens each device before it
// says it is waiting, so a press that comes before the background reader runs (a loaded TCG
// guest can take seconds to fork it) is queued on the open file, not lost.
const GUEST_SCRIPT = [
  'fd=3',
  'for event in /sys/class/input/event*; do',
  '  grep -q "Power Button" "$event/device/name" 2>/dev/null || continue',
  '  eval "exec $fd</dev/input/${event##*/}"',
  '  (head -c 1 <&$fd >/dev/null; touch /pressed) &',
  '  fd=$((fd + 1))',
  'done',
  'echo "ADDCOW-ACPI-WAITING $((fd - 3))"',
  'while [ ! -e /pressed ]; do sleep 1; done',
  'echo ADDCOW-ACPI-PRESSED',
].join('\n')
const BUTTON_MODULES = ['drivers/input/evdev.ko', 'drivers/acpi/button.ko']

const linux = await linuxGuestSuite('addcow-acpi-', GUEST_SCRIPT, { extraModules: BUTTON_MODULES })
const describeLinux = linux.describe

describeLinux('Shut down (ACPI) through QMP', () => {
  it('powers off a Linux guest that handles the power button; QEMU exits by itself', async () => {
    await writeFile(join(linux.folder, 'base.raw'), Buffer.alloc(16 * 1024 * 1024))
    const overlay = join(linux.folder, 'linux.add-cow')
    await createOverlay({ overlay, backing: 'base.raw', backingFormat: 'raw' })
    let serial = ''
    const vm = await launchVm({
      image: overlay,
      headless: true,
      machine: { accel: 'tcg', memoryMiB: 256, cpus: 1, network: 'none' },
      extraArgs: kernelArgs(linux.guest, 'console=ttyS0 panic=-1'),
      // Long enough that QMP quit (the stop fallback) cannot be what ends it.
      stopTimeoutMs: 600_000,
      onConsole: (chunk) => (serial += chunk.toString('utf8')),
    })
    const states: VmState[] = [vm.state]
    vm.on('state', (state: VmState) => states.push(state))
    try {
      const deadline = Date.now() + 240_000
      const late = (what: string) => new Error(`${what} within 240 s; serial console:\n${serial}`)
      while (!serial.includes('ADDCOW-ACPI-WAITING')) {
        if (!vm.qmp?.connected) throw new Error(`the guest ended early:\n${serial}`)
        if (Date.now() > deadline) throw late('the guest did not start waiting for the button')
        await new Promise((resolve) => setTimeout(resolve, 200))
      }
      // The guest found at least one power button to wait on.
      expect(serial).not.toContain('ADDCOW-ACPI-WAITING 0')
      expect(await vm.power('shut-down')).toBe('shutting-down')
      let timer: NodeJS.Timeout | undefined
      const exit = await Promise.race([
        vm.exited,
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(late('the guest did not power off')),
            deadline - Date.now(),
          )
        }),
      ]).finally(() => clearTimeout(timer))
      expect(serial).toContain('ADDCOW-ACPI-PRESSED')
      expect(serial).toContain(linux.guest.doneLine)
      // The guest powered off: QEMU's own exit, not a signal.
      expect(exit).toMatchObject({ code: 0, signal: null })
      expect(states).toEqual(['running', 'shutting-down', 'stopped'])
    } finally {
      await vm.forceOff()
    }
  }, 300_000)
})
