import AxeBuilder from '@axe-core/playwright'
import { randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { Locator, Page } from '@playwright/test'
import { expect, test, type WebApp } from './fixtures'
import {
  addcow,
  compareRaw,
  folder,
  openScreen,
  screenshot,
  withExport,
  writeGuest,
} from './operations-helpers'

// Live flatten and live commit from the running machine's page (issue 17 item 6), with real
// QEMU (TCG) booting a boot sector that writes sector 2048 through the BIOS and halts: Flatten
// now shows progress and cancels, starts again and ends with the overlay standalone, its bytes
// the chain's view; Commit… (active commit) shows the blast radius, and the base holds the
// guest's write afterwards while the machine goes on with it. The page names the new top at
// once (the served chain, the machine's disk, the command line).

const BOOT_SECTOR = fileURLToPath(new URL('../fixtures/boot/boot.bin', import.meta.url))
const CONSOLE_LINE = 'addcow boot test: sector 2048 written through int 13h'
/** What the guest writes at 1 MiB: its 16-byte line 32 times. */
const GUEST_SECTOR = Buffer.from('ADDCOW-BOOT-OK!\n'.repeat(32))
const GUEST_OFFSET = 1024 * 1024
const SMALL = ['-m', '64', '--cpus', '1', '--network', 'none', '--display', 'none']
const MiB = 1024 * 1024

test.describe.configure({ mode: 'serial' })

let dir: string

/** A base of `size` bytes: the boot sector, then random data (so a flatten copies real bytes). */
async function bootBase(path: string, size: number): Promise<Buffer> {
  const disk = randomBytes(size)
  ;(await readFile(BOOT_SECTOR)).copy(disk, 0)
  await writeFile(path, disk)
  return disk
}

/** The guest's view once it ran: the base with the sector it writes. */
function guestView(base: Buffer): Buffer {
  const view = Buffer.from(base)
  GUEST_SECTOR.copy(view, GUEST_OFFSET)
  return view
}

/** Start the saved machine `name` from the Machines screen; its running VM card once booted. */
async function startMachine(page: Page, webApp: WebApp, name: string): Promise<Locator> {
  await openScreen(page, webApp, 'machines')
  await page
    .getByRole('table', { name: 'Saved machines' })
    .getByRole('row', { name: new RegExp(`^${name} `) })
    .getByRole('button', { name: `Start ${name}` })
    .click()
  const vm = page.getByRole('region', { name: 'Virtual machine' })
  await expect(vm.getByRole('status', { name: 'VM status: Running' })).toBeVisible({
    timeout: 60_000,
  })
  await expect(vm.getByRole('log', { name: 'Serial console' })).toContainText(CONSOLE_LINE, {
    timeout: 60_000,
  })
  return vm
}

/** Take a live snapshot of the running VM and wait until the page says it was taken. */
async function takeSnapshot(vm: Locator): Promise<void> {
  await vm
    .getByRole('group', { name: 'Live operations' })
    .getByRole('button', { name: 'Snapshot' })
    .click()
  await expect(vm.getByRole('status').filter({ hasText: 'Snapshot taken' })).toBeVisible({
    timeout: 30_000,
  })
}

/** Launch `overlay` headless from its Launch page (64 MiB, no network); its VM once booted. */
async function launchOnImage(page: Page, webApp: WebApp, overlay: string): Promise<Locator> {
  await openScreen(page, webApp, 'launch', overlay)
  const machine = page.getByRole('region', { name: 'Machine', exact: true })
  await machine.getByText('None (headless: serial console only)').click()
  await machine.getByText('No network card').click()
  await machine.getByRole('textbox', { name: 'Memory in MiB' }).fill('64')
  const vm = page.getByRole('region', { name: 'Virtual machine' })
  await vm.getByRole('button', { name: 'Launch' }).click()
  await expect(vm.getByRole('log', { name: 'Serial console' })).toContainText(CONSOLE_LINE, {
    timeout: 60_000,
  })
  return vm
}

/** The page shows a VM running that it did not start, serving `served`, with its boot log. */
async function expectRunningVm(page: Page, served: string): Promise<Locator> {
  const vm = page.getByRole('region', { name: 'Virtual machine' })
  await expect(vm.getByRole('status', { name: 'VM status: Running' })).toBeVisible({
    timeout: 30_000,
  })
  await expect(vm.getByLabel('Served chain')).toContainText(served)
  await expect(vm.getByRole('log', { name: 'Serial console' })).toContainText(CONSOLE_LINE)
  return vm
}

/** Force the halted guest off and wait for the VM to end. */
async function forceOff(vm: Locator): Promise<void> {
  await vm.getByRole('button', { name: 'Stop' }).click()
  await vm.getByRole('button', { name: 'Force off' }).click({ timeout: 20_000 })
  await expect(vm.getByRole('status', { name: /VM status: (Stopped|Exited)/ })).toBeVisible({
    timeout: 30_000,
  })
}

/** Screenshots at both sizes the style guide asks for. */
async function screenshots(page: Page, name: string): Promise<void> {
  for (const size of [
    { width: 1280, height: 800 },
    { width: 1024, height: 700 },
  ]) {
    await page.setViewportSize(size)
    await screenshot(page, size.width === 1280 ? name : `${name}-${size.width}`)
  }
  await page.setViewportSize({ width: 1280, height: 800 })
}

/** Serious and critical axe violations on the page. */
async function seriousViolations(page: Page): Promise<string[]> {
  const { violations } = await new AxeBuilder({ page }).analyze()
  return violations
    .filter((violation) => violation.impact === 'serious' || violation.impact === 'critical')
    .map((violation) => `${violation.id}: ${violation.nodes.map((node) => node.target).join(', ')}`)
}

test.beforeAll(async ({ webApp }) => {
  dir = await folder(webApp, 'launch-live')
})

test('Flatten now: progress, cancel, again, done; the overlay stands alone with the chain view', async ({
  page,
  webApp,
}) => {
  test.setTimeout(600_000)
  const base = await bootBase(join(dir, 'flat-base.raw'), 48 * MiB)
  const overlay = join(dir, 'flat.add-cow')
  await addcow(webApp, ['create', '-b', 'flat-base.raw', '-F', 'raw', overlay])
  await addcow(webApp, ['machine', 'save', ...SMALL, 'flat', overlay])
  const vm = await startMachine(page, webApp, 'flat')
  const actions = vm.getByRole('group', { name: 'Live operations' })
  await expect(vm.getByLabel('Served chain')).toContainText(
    'The export serves flat.add-cow on flat-base.raw',
  )

  // Slowly (256 KiB/s: three minutes for the whole disk), so that progress shows and Cancel comes in time.
  await actions.getByRole('textbox', { name: 'Rate limit in bytes per second' }).fill('256K')
  await actions.getByRole('button', { name: 'Flatten now' }).click()
  const progress = vm.getByRole('group', { name: 'Live flatten in progress' })
  await expect(progress).toContainText(/[\d.]+ (KiB|MiB) of 4\d(\.\d)? MiB/, { timeout: 30_000 })
  // One live job at a time: the others say why they wait.
  await expect(actions.getByRole('button', { name: 'Commit…' })).toBeDisabled()
  await expect(vm.getByRole('note')).toHaveText(
    'The live flatten runs on this disk; wait for it or cancel it.',
  )
  // The Jobs view (another window of the app) lists it with its progress and its cancel.
  const jobsPage = await page.context().newPage()
  await jobsPage.goto(webApp.url)
  await expect(jobsPage.getByRole('heading', { name: 'Library' })).toBeVisible({ timeout: 60_000 })
  await jobsPage.goto(`${webApp.origin}/#/jobs`)
  const listed = jobsPage.getByRole('listitem', { name: /^Live flatten of a running VM: / })
  await expect(listed.getByRole('progressbar')).toBeVisible()
  await expect(
    listed.getByRole('button', { name: 'Cancel Live flatten of a running VM' }),
  ).toBeEnabled()
  await jobsPage.close()
  expect(await seriousViolations(page)).toEqual([])
  await screenshots(page, 'launch-live-flatten-progress')
  await progress.getByRole('button', { name: 'Cancel the live flatten' }).click()
  await expect(vm.getByRole('status').filter({ hasText: 'Flatten cancelled' })).toBeVisible({
    timeout: 30_000,
  })
  const cancelled = JSON.parse((await addcow(webApp, ['info', '--json', overlay])).stdout) as {
    'all-allocated': boolean
  }
  expect(cancelled['all-allocated']).toBe(false)
  await screenshots(page, 'launch-live-flatten-cancelled')

  // Again, at full speed, to the end.
  await actions.getByRole('textbox', { name: 'Rate limit in bytes per second' }).fill('')
  await actions.getByRole('button', { name: 'Flatten now' }).click()
  await expect(
    vm.getByRole('status').filter({ hasText: 'Flattened: flat.add-cow is now standalone' }),
  ).toContainText('(ALL_ALLOCATED) and the export reads only its raw image file', {
    timeout: 180_000,
  })
  await expect(vm.getByLabel('Served chain')).toContainText(
    'The export serves flat.add-cow alone (no base)',
  )
  // Nothing is left to stream or to commit into.
  await expect(actions.getByRole('button', { name: 'Flatten now' })).toBeDisabled()
  await expect(actions.getByRole('button', { name: 'Flatten now' })).toHaveAttribute(
    'title',
    'The served disk has no base: it stands alone already.',
  )
  await expect(vm.getByRole('status', { name: 'VM status: Running' })).toBeVisible()
  expect(await seriousViolations(page)).toEqual([])
  await screenshots(page, 'launch-live-flatten-done')
  await forceOff(vm)

  const info = JSON.parse((await addcow(webApp, ['info', '--json', overlay])).stdout) as {
    'all-allocated': boolean
    'full-data-file': string
  }
  expect(info['all-allocated']).toBe(true)
  // The raw image file alone is the guest's view: the base's bytes and the guest's sector.
  expect((await readFile(info['full-data-file'])).equals(guestView(base))).toBe(true)
  await addcow(webApp, ['check', overlay])
})

test('Commit… (active commit): blast radius, confirm; the base holds the guest data', async ({
  page,
  webApp,
}) => {
  test.setTimeout(420_000)
  const basePath = join(dir, 'commit-base.raw')
  const base = await bootBase(basePath, 4 * MiB)
  const overlay = join(dir, 'commit.add-cow')
  await addcow(webApp, ['create', '-b', 'commit-base.raw', '-F', 'raw', overlay])
  await addcow(webApp, ['machine', 'save', ...SMALL, 'commits', overlay])
  const vm = await startMachine(page, webApp, 'commits')
  // The guest's sector is in the overlay, not in the base.
  expect((await readFile(basePath)).equals(base)).toBe(true)

  await vm
    .getByRole('group', { name: 'Live operations' })
    .getByRole('button', { name: 'Commit…' })
    .click()
  const dialog = page.getByRole('dialog', { name: 'Commit while the machine runs' })
  await expect(dialog.getByRole('radio', { name: /commit\.add-cow \(the top/ })).toBeChecked()
  await expect(dialog).toContainText('No other image reads through this base')
  expect(await seriousViolations(page)).toEqual([])
  await screenshots(page, 'launch-live-commit-dialog')
  await dialog.getByRole('button', { name: 'Commit', exact: true }).click()
  await expect(
    vm.getByRole('status').filter({ hasText: 'Committed commit.add-cow into commit-base.raw' }),
  ).toContainText('the machine now runs on commit-base.raw', { timeout: 120_000 })
  // The page shows what is served now, at once.
  await expect(vm.getByLabel('Served chain')).toContainText(
    'The export serves commit-base.raw alone (no base)',
  )
  await expect(vm.getByRole('status', { name: 'VM status: Running' })).toBeVisible()
  await screenshots(page, 'launch-live-commit-done')
  await forceOff(vm)
  // The saved machine follows, as libvirt's active block commit pivots the domain's disk: its
  // next start runs on the base it now runs on, not on the emptied overlay.
  const saved = await addcow(webApp, ['machine', 'show', '--json', 'commits'])
  expect(JSON.parse(saved.stdout)).toMatchObject({ disk: basePath })

  expect((await readFile(basePath)).equals(guestView(base))).toBe(true)
  const checked = await addcow(webApp, ['check', overlay]).catch(
    (error: { stdout?: string; stderr?: string }) => error,
  )
  expect(`${checked.stdout ?? ''}${checked.stderr ?? ''}`).toContain(
    'No errors were found on the image.',
  )
})

test('Snapshot: the command line and the machine name the new top without a reload', async ({
  page,
  webApp,
}) => {
  test.setTimeout(300_000)
  await bootBase(join(dir, 'snap-base.raw'), 2 * MiB)
  const overlay = join(dir, 'snapped.add-cow')
  await addcow(webApp, ['create', '-b', 'snap-base.raw', '-F', 'raw', overlay])
  await addcow(webApp, ['machine', 'save', ...SMALL, 'snaps', overlay])
  const vm = await startMachine(page, webApp, 'snaps')
  const commandLine = page.getByRole('region', { name: 'Command line' })
  await expect(commandLine).toContainText('snapped.add-cow')
  await takeSnapshot(vm)
  await expect(vm.getByLabel('Served chain')).toContainText(
    'The export serves snapped-snap1.add-cow on snapped.add-cow → snap-base.raw',
  )
  await expect(page.getByRole('region', { name: 'Machine', exact: true })).toContainText(
    'snapped-snap1.add-cow',
  )
  await expect(commandLine).toContainText('snapped-snap1.add-cow')
  await forceOff(vm)
})

test('A launch on an image snapshotted live is found again after a reload, on its new top', async ({
  page,
  webApp,
}) => {
  test.setTimeout(300_000)
  await bootBase(join(dir, 'shot-base.raw'), 2 * MiB)
  const overlay = join(dir, 'shot.add-cow')
  await addcow(webApp, ['create', '-b', 'shot-base.raw', '-F', 'raw', overlay])
  const vm = await launchOnImage(page, webApp, overlay)
  await takeSnapshot(vm)
  await expect(vm.getByLabel('Served chain')).toContainText(
    'The export serves shot-snap1.add-cow on shot.add-cow → shot-base.raw',
  )
  // The page follows the new top; after a reload it finds the VM running on it, with its
  // console, not an idle launch form.
  await expect(page).toHaveURL(/shot-snap1\.add-cow/)
  await page.reload()
  await forceOff(
    await expectRunningVm(
      page,
      'The export serves shot-snap1.add-cow on shot.add-cow → shot-base.raw',
    ),
  )
})

test('A snapshot taken from a shell (addcow job snapshot) is followed: the new top finds the VM', async ({
  page,
  webApp,
}) => {
  test.setTimeout(300_000)
  await bootBase(join(dir, 'shell-base.raw'), 2 * MiB)
  const overlay = join(dir, 'shell.add-cow')
  await addcow(webApp, ['create', '-b', 'shell-base.raw', '-F', 'raw', overlay])
  await launchOnImage(page, webApp, overlay)
  // The snapshot goes through the export's control socket, not through the app's job.
  const shot = await addcow(webApp, ['job', 'snapshot', '--image', overlay, '--json'])
  const top = join(dir, 'shell-snap1.add-cow')
  expect(JSON.parse(shot.stdout)).toMatchObject({ top })
  // The launch job follows the swap: the Launch page of the new top finds the VM running on
  // it (it showed an idle launch form: the job still named shell.add-cow).
  await openScreen(page, webApp, 'launch', top)
  await forceOff(
    await expectRunningVm(
      page,
      'The export serves shell-snap1.add-cow on shell.add-cow → shell-base.raw',
    ),
  )
})

test('A live flatten is picked up again when the page is left and opened again, and after a reload', async ({
  page,
  webApp,
}) => {
  test.setTimeout(420_000)
  await bootBase(join(dir, 'away-base.raw'), 8 * MiB)
  const overlay = join(dir, 'away.add-cow')
  await addcow(webApp, ['create', '-b', 'away-base.raw', '-F', 'raw', overlay])
  await addcow(webApp, ['machine', 'save', ...SMALL, 'away', overlay])
  let vm = await startMachine(page, webApp, 'away')
  const launchUrl = page.url()
  // 64 KiB/s: two minutes for the disk, so the job still runs after the page comes back.
  const actions = vm.getByRole('group', { name: 'Live operations' })
  await actions.getByRole('textbox', { name: 'Rate limit in bytes per second' }).fill('64K')
  await actions.getByRole('button', { name: 'Flatten now' }).click()
  const progressOf = (card: Locator): Locator =>
    card.getByRole('group', { name: 'Live flatten in progress' })
  await expect(progressOf(vm)).toContainText(/[\d.]+ (KiB|MiB) of 7\.9\d MiB/, { timeout: 30_000 })

  // Away to the Library and back (no reload): the page finds the job main runs.
  await page.goto(`${webApp.origin}/#/library`)
  await expect(page.getByRole('heading', { name: 'Library' })).toBeVisible()
  await page.goto(launchUrl)
  vm = page.getByRole('region', { name: 'Virtual machine' })
  await expect(vm.getByRole('status', { name: 'VM status: Running' })).toBeVisible()
  await expect(progressOf(vm)).toContainText(/[\d.]+ (KiB|MiB) of 7\.9\d MiB/, { timeout: 30_000 })
  await expect(vm.getByRole('note')).toHaveText(
    'The live flatten runs on this disk; wait for it or cancel it.',
  )
  await expect(
    vm.getByRole('group', { name: 'Live operations' }).getByRole('button', { name: 'Commit…' }),
  ).toBeDisabled()

  // A reload: the same, from the jobs main lists; the console still shows the boot log (main
  // kept it), not only what the guest prints from now on.
  await page.reload()
  vm = page.getByRole('region', { name: 'Virtual machine' })
  await expect(vm.getByRole('status', { name: 'VM status: Running' })).toBeVisible({
    timeout: 30_000,
  })
  await expect(vm.getByRole('log', { name: 'Serial console' })).toContainText(CONSOLE_LINE)
  await expect(progressOf(vm)).toContainText(/[\d.]+ (KiB|MiB) of 7\.9\d MiB/, { timeout: 30_000 })
  await screenshots(page, 'launch-live-flatten-picked-up')
  // Its cancel works, and its end shows as if this page had started it.
  await progressOf(vm).getByRole('button', { name: 'Cancel the live flatten' }).click()
  await expect(vm.getByRole('status').filter({ hasText: 'Flatten cancelled' })).toBeVisible({
    timeout: 30_000,
  })
  await expect(
    vm.getByRole('group', { name: 'Live operations' }).getByRole('button', { name: 'Flatten now' }),
  ).toBeEnabled()
  const info = JSON.parse((await addcow(webApp, ['info', '--json', overlay])).stdout) as {
    'all-allocated': boolean
  }
  expect(info['all-allocated']).toBe(false)

  // Cancelled from a shell (`addcow job cancel` on the VM's control socket): cancelled on the
  // page and in the Jobs view too, never failed.
  // (The reload emptied the rate box: 64 KiB/s again.)
  await vm.getByRole('textbox', { name: 'Rate limit in bytes per second' }).fill('64K')
  await vm.getByRole('button', { name: 'Flatten now' }).click()
  // (What is left of the disk: the first flatten copied part of it.)
  await expect(progressOf(vm)).toContainText(/[\d.]+ (KiB|MiB) of 7\.\d+ MiB/, { timeout: 30_000 })
  const cancelled = await addcow(webApp, ['job', 'cancel', 'flatten-2', '--image', overlay])
  expect(cancelled.stdout).toMatch(/^flatten-2 was cancelled/)
  await expect(vm.getByRole('status').filter({ hasText: 'Flatten cancelled' })).toBeVisible({
    timeout: 30_000,
  })
  await expect(vm.getByRole('alert').filter({ hasText: 'The live flatten stopped' })).toHaveCount(0)
  await page.goto(`${webApp.origin}/#/jobs`)
  const listed = page
    .getByRole('listitem', { name: /^Live flatten of a running VM: / })
    .filter({ hasText: 'addcow job cancel flatten-2' })
  await expect(listed).toContainText('Cancelled')
  await expect(listed).toContainText(
    'Cancelled outside the app (addcow job cancel flatten-2); what it copied stays.',
  )
  // The row shows the title once: the note does not repeat it.
  await expect(listed).not.toContainText('Live flatten of a running VM: cancelled')
  await screenshots(page, 'jobs-live-cancelled-elsewhere')
  await page.goto(launchUrl)
  await forceOff(page.getByRole('region', { name: 'Virtual machine' }))
})

test('Copy-on-read from the launch form reaches the export: the guest reads warm the overlay', async ({
  page,
  webApp,
}) => {
  test.setTimeout(300_000)
  const base = await bootBase(join(dir, 'warm-base.raw'), 2 * MiB)
  const overlay = join(dir, 'warm.add-cow')
  await addcow(webApp, ['create', '-b', 'warm-base.raw', '-F', 'raw', '-c', '64K', overlay])
  await openScreen(page, webApp, 'launch', overlay)
  const machine = page.getByRole('region', { name: 'Machine', exact: true })
  await machine.getByText('None (headless: serial console only)').click()
  await machine.getByText('No network card').click()
  await machine.getByRole('textbox', { name: 'Memory in MiB' }).fill('64')
  await machine.getByRole('textbox', { name: 'Virtual CPUs' }).fill('1')
  const copyOnRead = machine.getByRole('checkbox', {
    name: 'Copy what the guest reads into the overlay (copy-on-read)',
  })
  // Read-only rules it out: it is unticked and says why; without read-only it can be ticked.
  await copyOnRead.check()
  await machine.getByRole('checkbox', { name: 'Attach the disk read-only' }).check()
  await expect(copyOnRead).not.toBeChecked()
  // Disabled for assistive technology too (aria-disabled), not only out of the tab order.
  await expect(copyOnRead).toBeDisabled()
  await expect(machine).toContainText('Copy-on-read writes the overlay: not with a read-only disk.')
  await machine.getByRole('checkbox', { name: 'Attach the disk read-only' }).uncheck()
  await expect(copyOnRead).toBeEnabled()
  await copyOnRead.check()
  await expect(machine).toContainText(
    'A slow or remote base warms the local overlay as the guest reads it.',
  )
  const commandLine = page.getByRole('region', { name: 'Command line' })
  await expect(commandLine).toContainText(
    /addcow serve --socket \S+ --copy-on-read \S*warm\.add-cow/,
  )
  await screenshots(page, 'launch-copy-on-read-form')

  const vm = page.getByRole('region', { name: 'Virtual machine' })
  await vm.getByRole('button', { name: 'Launch' }).click()
  await expect(vm.getByRole('log', { name: 'Serial console' })).toContainText(CONSOLE_LINE, {
    timeout: 60_000,
  })
  await expect(vm.getByLabel('Served chain')).toContainText(
    'The export serves warm.add-cow on warm-base.raw, copying what the guest reads from below into it (copy-on-read).',
  )
  // A launch on an image is followed again when its page is opened again (as a machine's is).
  const launchUrl = page.url()
  await page.goto(`${webApp.origin}/#/library`)
  await expect(page.getByRole('heading', { name: 'Library' })).toBeVisible()
  await page.goto(launchUrl)
  await expect(vm.getByRole('status', { name: 'VM status: Running' })).toBeVisible()
  await expect(vm.getByLabel('Served chain')).toContainText('(copy-on-read)')
  await forceOff(vm)
  // The boot sector's cluster, read by the BIOS, is the overlay's own now, with the base's bytes.
  const map = JSON.parse((await addcow(webApp, ['map', '--json', overlay])).stdout) as {
    start: number
    depth: number
  }[]
  expect(map[0]).toMatchObject({ start: 0, depth: 0 })
  const image = await readFile(join(dir, 'warm.raw'))
  expect(image.subarray(0, 64 * 1024).equals(base.subarray(0, 64 * 1024))).toBe(true)
})

test('Commit… a layer below the top: the lower layer goes into its base while the machine runs on', async ({
  page,
  webApp,
}) => {
  test.setTimeout(300_000)
  const basePath = join(dir, 'lower-base.raw')
  const base = await bootBase(basePath, 4 * MiB)
  const mid = join(dir, 'lower-mid.add-cow')
  await addcow(webApp, ['create', '-b', 'lower-base.raw', '-F', 'raw', mid])
  // The middle layer holds its own data before the top is made on it.
  const MID_OFFSET = 2 * MiB
  await writeGuest(webApp, mid, [`write -P 0x66 ${MID_OFFSET} 64k`])
  const top = join(dir, 'lower-top.add-cow')
  await addcow(webApp, ['create', '-b', 'lower-mid.add-cow', '-F', 'add-cow', top])
  await addcow(webApp, ['machine', 'save', ...SMALL, 'lower', top])
  const vm = await startMachine(page, webApp, 'lower')
  await expect(vm.getByLabel('Served chain')).toContainText(
    'The export serves lower-top.add-cow on lower-mid.add-cow → lower-base.raw',
  )

  await vm
    .getByRole('group', { name: 'Live operations' })
    .getByRole('button', { name: 'Commit…' })
    .click()
  const dialog = page.getByRole('dialog', { name: 'Commit while the machine runs' })
  await dialog.getByText('lower-mid.add-cow into lower-base.raw', { exact: true }).click()
  await expect(
    dialog.getByRole('radio', { name: 'lower-mid.add-cow into lower-base.raw' }),
  ).toBeChecked()
  await expect(dialog).toContainText('No other image reads through this base')
  await screenshots(page, 'launch-live-commit-lower-dialog')
  await dialog.getByRole('button', { name: 'Commit', exact: true }).click()
  await expect(
    vm.getByRole('status').filter({ hasText: 'Committed lower-mid.add-cow into lower-base.raw' }),
  ).toContainText('lower-mid.add-cow is empty and reads its base.', { timeout: 120_000 })
  // The machine goes on with the same chain: only the middle layer's data moved down.
  await expect(vm.getByLabel('Served chain')).toContainText(
    'The export serves lower-top.add-cow on lower-mid.add-cow → lower-base.raw',
  )
  await expect(vm.getByRole('status', { name: 'VM status: Running' })).toBeVisible()
  await forceOff(vm)

  // The base holds the middle layer's data; the middle layer holds nothing of its own.
  const expectedBase = Buffer.from(base)
  expectedBase.fill(0x66, MID_OFFSET, MID_OFFSET + 64 * 1024)
  expect((await readFile(basePath)).equals(expectedBase)).toBe(true)
  const midMap = JSON.parse((await addcow(webApp, ['map', '--json', mid])).stdout) as {
    depth: number
  }[]
  expect(midMap.every((extent) => extent.depth !== 0)).toBe(true)
  // The top's guest view: the base (now with the middle layer's data) and the guest's sector.
  const expectedView = join(dir, 'lower-expected.raw')
  await writeFile(expectedView, guestView(expectedBase))
  await withExport(webApp, top, (uri) => compareRaw(uri, expectedView), { readOnly: true })
})
