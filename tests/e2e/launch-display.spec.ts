import AxeBuilder from '@axe-core/playwright'
import type { Locator, Page } from '@playwright/test'
import { expect, requestFromPage, test } from './fixtures'
import { bootOverlay, folder, openScreen, screenshot } from './operations-helpers'

// The graphical console with real QEMU (TCG): the guest is tests/fixtures/boot/keys.bin, a
// boot sector that shows the BIOS tick count in the screen's corner and echoes keys on the
// screen and on COM1 ("key X"). The browser mode's noVNC must draw SeaBIOS's text, carry
// typed keys to the guest, and the power controls must pause, resume, reset and end it.

const READY_LINE = 'addcow keys test: ready'

test.describe.configure({ mode: 'serial' })

let overlay: string

test.beforeAll(async ({ webApp }) => {
  const dir = await folder(webApp, 'display')
  overlay = await bootOverlay(webApp, dir, 'keys', {
    base: 'keys-base.raw',
    overlay: 'keys.add-cow',
  })
})

/**
 * What the console's canvas shows: how many pixels are lit, and a digest of all of them (or of
 * the first `rows` pixel rows only).
 */
async function canvasPicture(
  screen: Locator,
  rows?: number,
): Promise<{ lit: number; digest: string }> {
  return screen.locator('canvas').evaluate((canvas: HTMLCanvasElement, rows?: number) => {
    const context = canvas.getContext('2d')
    if (!context || canvas.width === 0) return { lit: 0, digest: '' }
    const { data } = context.getImageData(0, 0, canvas.width, rows ?? canvas.height)
    let lit = 0
    let hash = 0x811c9dc5
    for (let index = 0; index < data.length; index += 4) {
      if (data[index]! + data[index + 1]! + data[index + 2]! > 192) lit++
      hash = Math.imul(
        hash ^ (data[index]! ^ (data[index + 1]! << 8) ^ (data[index + 2]! << 16)),
        0x01000193,
      )
    }
    return { lit, digest: `${canvas.width}x${canvas.height}:${(hash >>> 0).toString(16)}` }
  }, rows)
}

/**
 * The guest's first text row (16 pixels in VGA text mode), where keys.asm draws the BIOS tick
 * count: it stands still while the guest is paused. The rest of the screen may not: QEMU's VGA
 * emulation blinks the text cursor whether or not the guest runs.
 */
const TICK_ROW = 16

/** Serious and critical axe violations on the page. */
async function seriousViolations(page: Page): Promise<string[]> {
  const results = await new AxeBuilder({ page }).analyze()
  return results.violations
    .filter((violation) => violation.impact === 'serious' || violation.impact === 'critical')
    .map((violation) => `${violation.id}: ${violation.help}`)
}

test('the graphical console shows the guest, takes keys, and the power controls drive it', async ({
  page,
  webApp,
}) => {
  // Three boots under TCG on a shared machine.
  test.setTimeout(480_000)
  await openScreen(page, webApp, 'launch', overlay)
  const machine = page.getByRole('region', { name: 'Machine', exact: true })
  // No desktop where QEMU runs, and the browser mode: the console in the app is the default.
  await expect(machine.getByRole('radio', { name: 'In the app (graphical console)' })).toBeChecked()
  await machine.getByText('No network card').click()
  await machine.getByRole('textbox', { name: 'Memory in MiB' }).fill('64')
  await machine.getByRole('textbox', { name: 'Virtual CPUs' }).fill('1')
  await machine.getByRole('textbox', { name: 'Virtual CPUs' }).blur()
  const commandLine = page.getByRole('region', { name: 'Command line' })
  await expect(commandLine.getByRole('row').filter({ hasText: '-vnc unix:' })).toContainText(
    "shown in the app's graphical console",
  )

  const vm = page.getByRole('region', { name: 'Virtual machine' })
  await vm.getByRole('button', { name: 'Launch' }).click()
  await expect(vm.getByRole('status', { name: 'VM status: Running' })).toBeVisible({
    timeout: 60_000,
  })
  const screenLink = vm.getByRole('status', { name: 'Screen connection' })
  await expect(screenLink).toContainText('Connected', { timeout: 30_000 })
  const screen = vm.getByRole('application', { name: 'Guest screen' })
  const serial = vm.getByRole('log', { name: 'Serial console' })
  await expect(serial).toContainText(READY_LINE, { timeout: 60_000 })
  // SeaBIOS's banner and the guest's prompt: white text on black, a few thousand pixels.
  await expect
    .poll(async () => (await canvasPicture(screen)).lit, { timeout: 30_000 })
    .toBeGreaterThan(2000)

  // Keys typed into the focused screen reach the guest: it echoes them on COM1.
  await screen.locator('canvas').click()
  await page.keyboard.type('addcow')
  for (const key of 'addcow') await expect(serial).toContainText(`key ${key}`)
  await expect(serial).toContainText('key a\r\nkey d\r\nkey d\r\nkey c\r\nkey o\r\nkey w')

  await page.getByRole('main').evaluate((main) => main.parentElement?.scrollTo(0, 0))
  await screenshot(page, 'launch-display')
  await page.setViewportSize({ width: 1024, height: 700 })
  await screenshot(page, 'launch-display-1024')
  await page.emulateMedia({ colorScheme: 'dark' })
  await screenshot(page, 'launch-display-1024-dark')
  await page.setViewportSize({ width: 1280, height: 800 })
  await screenshot(page, 'launch-display-dark')
  await page.emulateMedia({ colorScheme: 'light' })
  expect(await seriousViolations(page)).toEqual([])

  // A viewer that asks for the screen alone (RFB ClientInit shared=0) makes QEMU drop the
  // others: the console says it lost the screen, and Reconnect brings it back.
  const jobs = (await requestFromPage(page, 'jobs:list-jobs', {})).value as {
    jobs: { id: string; channel: string; state: string }[]
  }
  const vmJob = jobs.jobs.find((job) => job.channel === 'qemu:launch-vm' && job.state === 'running')
  expect(vmJob).toBeDefined()
  await page.evaluate(async (id) => {
    const socket = new WebSocket(`ws://${location.host}/vnc?vm=${id}`)
    socket.binaryType = 'arraybuffer'
    let received = 0
    await new Promise<void>((resolve) => {
      socket.onmessage = (message: MessageEvent<ArrayBuffer>) => {
        received += message.data.byteLength
        // Version (12 bytes), then the security types (2 bytes here: one type, None).
        if (received === 12) socket.send(new TextEncoder().encode('RFB 003.008\n'))
        else if (received === 14) socket.send(new Uint8Array([1]))
        // SecurityResult (4 bytes): ClientInit, not shared; ServerInit follows.
        else if (received === 18) socket.send(new Uint8Array([0]))
        else if (received > 18) resolve()
      }
    })
    socket.close()
  }, vmJob!.id)
  await expect(screenLink).toContainText('Disconnected')
  await vm.getByRole('button', { name: 'Reconnect' }).click()
  await expect(screenLink).toContainText('Connected:')

  // Pause: the state says so and the guest's clock (the tick count on its screen) stands still.
  const power = vm.getByRole('group', { name: 'Power' })
  await power.getByRole('button', { name: 'Pause' }).click()
  await expect(vm.getByRole('status', { name: 'VM status: Paused' })).toBeVisible()
  const paused = await canvasPicture(screen, TICK_ROW)
  await page.waitForTimeout(2000)
  expect((await canvasPicture(screen, TICK_ROW)).digest).toBe(paused.digest)
  // Resume: the ticks move again.
  await power.getByRole('button', { name: 'Resume' }).click()
  await expect(vm.getByRole('status', { name: 'VM status: Running' })).toBeVisible()
  await expect
    .poll(async () => (await canvasPicture(screen, TICK_ROW)).digest, { timeout: 20_000 })
    .not.toBe(paused.digest)

  // Reset asks first and says what is lost; Cancel leaves the guest running as it was.
  await power.getByRole('button', { name: 'Reset' }).click()
  // (found by its accessible name: every dialog of the app is labelled by its title)
  const resetDialog = page.getByRole('dialog', { name: 'Reset the guest?' })
  await expect(resetDialog).toContainText('had not yet written to its disk is lost')
  await screenshot(page, 'launch-reset-confirm')
  expect(await seriousViolations(page)).toEqual([])
  await resetDialog.getByRole('button', { name: 'Cancel' }).click()
  await expect(resetDialog).toHaveCount(0)
  // Reset: the guest starts again from the firmware (its ready line a second time).
  await power.getByRole('button', { name: 'Reset' }).click()
  await resetDialog.getByRole('button', { name: 'Reset' }).click()
  await expect
    .poll(async () => ((await serial.textContent()) ?? '').split(READY_LINE).length - 1, {
      timeout: 60_000,
    })
    .toBe(2)
  await expect(screenLink).toContainText('Connected')

  // Ctrl+Alt+Del goes to the guest, where SeaBIOS's keyboard handler reboots: a third start.
  const screenControls = vm.getByRole('toolbar', { name: 'Screen controls' })
  await screenControls.getByRole('button', { name: 'Send Ctrl+Alt+Del' }).click()
  await expect
    .poll(async () => ((await serial.textContent()) ?? '').split(READY_LINE).length - 1, {
      timeout: 60_000,
    })
    .toBe(3)

  // Full screen shows the console alone, its controls included, and leaves it again.
  await screenControls.getByRole('button', { name: 'Full screen' }).click()
  await expect
    .poll(() => page.evaluate(() => document.fullscreenElement?.className ?? ''))
    .toContain('vm-display')
  await screenControls.getByRole('button', { name: 'Leave full screen' }).click()
  await expect.poll(() => page.evaluate(() => document.fullscreenElement)).toBeNull()

  // Shut down presses the ACPI button; this guest has no ACPI, so it goes on: Force off ends it.
  await power.getByRole('button', { name: 'Shut down' }).click()
  await expect(vm.getByRole('status', { name: 'VM status: Shutting down…' })).toBeVisible()
  await power.getByRole('button', { name: 'Force off' }).click()
  await page
    .getByRole('dialog', { name: 'Force the guest off?' })
    .getByRole('button', { name: 'Force off' })
    .click()
  await expect(vm.getByRole('status', { name: 'VM status: Stopped' })).toBeVisible({
    timeout: 20_000,
  })
  await expect(screenLink).toContainText('The VM stopped')
  await expect(vm.getByRole('group', { name: 'Power' })).toHaveCount(0)
})

test('the screen endpoint refuses a VM this app did not launch', async ({ page, webApp }) => {
  await openScreen(page, webApp, 'launch', overlay)
  const closed = await page.evaluate(
    () =>
      new Promise<string>((resolve) => {
        const socket = new WebSocket(`ws://${location.host}/vnc?vm=no-such-vm`)
        socket.onopen = () => resolve('open')
        socket.onclose = (event) => resolve(`closed ${event.code}`)
      }),
  )
  expect(closed).toBe('closed 1006')
})
