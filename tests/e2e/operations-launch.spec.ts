import { readFile } from 'node:fs/promises'
import { expect, test } from './fixtures'
import { bootOverlay, folder, openScreen, screenshot } from './operations-helpers'

// The launch screen with real QEMU: the boot sector of tests/fixtures/boot prints a line on
// the serial port, which must reach the live console; with isa-debug-exit it exits QEMU with
// status 33, without it it halts until the user stops the VM.

const CONSOLE_LINE = 'addcow boot test: sector 2048 written through int 13h'

test.describe.configure({ mode: 'serial' })

let overlay: string

test.beforeAll(async ({ webApp }) => {
  const dir = await folder(webApp, 'launch')
  overlay = await bootOverlay(webApp, dir, 'boot', { base: 'base.raw', overlay: 'boot.add-cow' })
})

test('the launch screen explains the command line, copies it, and shows the console', async ({
  page,
  webApp,
  context,
}) => {
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: webApp.origin })
  await openScreen(page, webApp, 'launch', overlay)
  await expect(page.getByRole('heading', { name: 'Launch', exact: true })).toBeVisible()
  const machine = page.getByRole('region', { name: 'Machine', exact: true })
  const commandLine = page.getByRole('region', { name: 'Command line' })

  // An option that cannot work is explained: the overlay is not flattened.
  await machine.getByText("The flattened overlay's raw image file").click()
  const problem = commandLine.getByRole('alert')
  await expect(problem).toContainText(`${overlay} is not flattened`)
  await expect(problem).toContainText('ALL_ALLOCATED')
  await expect(problem).toContainText('What you can do:')
  await machine.getByText("Through the app's NBD export (stock QEMU)").click()

  await machine.getByText('None (headless: serial console only)').click()
  await machine.getByText('No network card').click()
  await machine.getByRole('textbox', { name: 'Memory in MiB' }).fill('64')
  await machine.getByRole('textbox', { name: 'Virtual CPUs' }).fill('1')
  await machine
    .getByRole('textbox', { name: 'Extra QEMU arguments' })
    .fill('-device isa-debug-exit,iobase=0xf4,iosize=0x04')
  await machine.getByRole('textbox', { name: 'Extra QEMU arguments' }).blur()
  await expect(machine).toContainText('64 MiB of memory, 1 virtual CPU')

  const rows = commandLine.getByRole('row')
  await expect(rows.filter({ hasText: '-m 64' })).toContainText('64 MiB of guest memory')
  await expect(rows.filter({ hasText: '-display none' })).toContainText('no window (headless)')
  await expect(rows.filter({ hasText: '-nic none' })).toContainText('no network card')
  await expect(rows.filter({ hasText: 'isa-debug-exit' })).toContainText(
    'extra arguments, passed through as given',
  )
  await expect(rows.filter({ hasText: '-blockdev' })).toContainText('served by addcow serve')
  await commandLine.getByRole('button', { name: 'Copy the QEMU command line' }).click()
  await expect(page.getByText('Copied the QEMU command line.')).toBeVisible()
  const copied = await page.evaluate(() => navigator.clipboard.readText())
  expect(copied).toMatch(/^# Start the export; it runs until Ctrl-C:\n# {3}addcow serve/)
  expect(copied).toMatch(/qemu-system-x86_64 \\\n/)
  expect(copied).toContain('  -m 64 \\\n')
  expect(copied).toContain('  -device isa-debug-exit,iobase=0xf4,iosize=0x04\n')

  const vm = page.getByRole('region', { name: 'Virtual machine' })
  await expect(vm.getByRole('status', { name: 'VM status: Not running' })).toBeVisible()
  await vm.getByRole('button', { name: 'Launch' }).click()
  await expect(vm.getByRole('log', { name: 'Serial console' })).toContainText(CONSOLE_LINE, {
    timeout: 60_000,
  })
  // The guest exits through isa-debug-exit: (0x10 << 1) | 1.
  await expect(vm.getByRole('status', { name: 'VM status: Exited' })).toBeVisible({
    timeout: 60_000,
  })
  await expect(vm).toContainText('QEMU exited with status 33.')
  await screenshot(page, 'launch')
  await page.emulateMedia({ colorScheme: 'dark' })
  await screenshot(page, 'launch-dark')
  await page.emulateMedia({ colorScheme: 'light' })
})

test('a VM that does not exit by itself runs until it is stopped', async ({ page, webApp }) => {
  test.setTimeout(150_000)
  await openScreen(page, webApp, 'launch', overlay)
  const machine = page.getByRole('region', { name: 'Machine', exact: true })
  await machine.getByText('None (headless: serial console only)').click()
  await machine.getByText('No network card').click()
  await machine.getByRole('textbox', { name: 'Memory in MiB' }).fill('64')
  await machine.getByRole('textbox', { name: 'Memory in MiB' }).blur()
  const rows = page.getByRole('region', { name: 'Command line' }).getByRole('row')
  await expect(rows.filter({ hasText: '-m 64' })).toBeVisible()

  const vm = page.getByRole('region', { name: 'Virtual machine' })
  await vm.getByRole('button', { name: 'Launch' }).click()
  await expect(vm.getByRole('status', { name: 'VM status: Running' })).toBeVisible()
  await expect(vm).toContainText(/QEMU pid \d+/)
  await expect(vm.getByRole('log', { name: 'Serial console' })).toContainText(CONSOLE_LINE, {
    timeout: 60_000,
  })
  await expect(vm.getByRole('textbox', { name: 'Type into the serial console' })).toBeEnabled()
  // The halted guest ignores the ACPI power-down; after the stop timeout QEMU is told to quit.
  await vm.getByRole('button', { name: 'Stop' }).click()
  await expect(vm.getByRole('status', { name: 'VM status: Stopping…' })).toBeVisible()
  await expect(vm.getByRole('status', { name: 'VM status: Stopped' })).toBeVisible({
    timeout: 90_000,
  })
  await expect(vm.getByRole('button', { name: 'Launch' })).toBeEnabled()
})

test('on this host the form offers only what works, the command shown is the one run, Force off stops a VM', async ({
  page,
  webApp,
}) => {
  test.setTimeout(150_000)
  await openScreen(page, webApp, 'launch', overlay)
  const machine = page.getByRole('region', { name: 'Machine', exact: true })
  // Headless host (no DISPLAY): no window is offered, the graphical console in the app is the
  // default, and the add-cow driver this QEMU lacks is off, each with its reason.
  if (!process.env.DISPLAY && !process.env.WAYLAND_DISPLAY) {
    await expect(
      machine.getByRole('radio', { name: 'In the app (graphical console)' }),
    ).toBeChecked()
    await expect(machine.getByRole('radio', { name: "A window (QEMU's choice)" })).toBeDisabled()
    await expect(machine).toContainText(/no window can open|has no GTK display/)
  }
  await expect(machine.getByRole('radio', { name: /Native add-cow driver/ })).toBeDisabled()
  await expect(machine).toContainText('has no add-cow driver')
  await expect(machine.getByLabel('Accelerator')).toContainText(/KVM|TCG/)
  await machine.getByText('No network card').click()
  await machine.getByRole('textbox', { name: 'Memory in MiB' }).fill('64')
  await machine.getByRole('textbox', { name: 'Extra QEMU arguments' }).fill('-S')
  await machine.getByRole('textbox', { name: 'Extra QEMU arguments' }).blur()
  const commandLine = page.getByRole('region', { name: 'Command line' })
  const rows = commandLine.getByRole('row')
  await expect(rows.filter({ hasText: '-m 64' })).toBeVisible()
  await expect(rows.filter({ hasText: /^-S/ })).toBeVisible()
  await screenshot(page, 'launch-capabilities')

  const vm = page.getByRole('region', { name: 'Virtual machine' })
  await vm.getByRole('button', { name: 'Launch' }).click()
  // -S: QEMU starts with the guest paused, and QMP's query-status says so.
  await expect(vm.getByRole('status', { name: 'VM status: Paused' })).toBeVisible()
  await expect(vm).toContainText(/QEMU pid \d+/)
  const pid = Number(/QEMU pid (\d+)/.exec((await vm.textContent()) ?? '')?.[1])
  const executed = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0').slice(0, -1)
  const quote = (arg: string): string =>
    arg !== '' && /^[A-Za-z0-9_./:=,@%+-]+$/.test(arg) ? arg : `'${arg.replace(/'/g, `'\\''`)}'`
  const shownOptions = (await commandLine.locator('tbody tr td:first-child').allTextContents()).map(
    (text) => text.trim(),
  )
  expect(shownOptions.join(' ')).toBe(executed.slice(1).map(quote).join(' '))
  await expect(commandLine.locator('code.binary')).toHaveText(executed[0]!)

  // A paused guest ignores the ACPI power-down: Force off is offered and ends it at once.
  await vm.getByRole('button', { name: 'Stop' }).click()
  await expect(vm.getByRole('status', { name: 'VM status: Stopping…' })).toBeVisible()
  await vm.getByRole('button', { name: 'Force off' }).click({ timeout: 20_000 })
  await page
    .getByRole('dialog', { name: 'Force the guest off?' })
    .getByRole('button', { name: 'Force off' })
    .click()
  await expect(vm.getByRole('status', { name: 'VM status: Stopped' })).toBeVisible({
    timeout: 20_000,
  })
})
