import AxeBuilder from '@axe-core/playwright'
import { createHash } from 'node:crypto'
import { readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import type { Page } from '@playwright/test'
import { expect, test, type WebApp } from './fixtures'
import { addcow, bootOverlay, folder, openScreen, screenshot } from './operations-helpers'

// Saved machines in the app, with real QEMU (TCG) and the CLI on the same library file: a
// machine saved in the CLI is listed, one saved in the app (New, Save as machine) is what
// `addcow machine list --json` shows, edited, duplicated and deleted the same way; Start opens
// the machine's page with its console; "Run without saving changes" leaves the overlay's
// files untouched; "Reset to base" in the library empties the overlay after saying what is lost.

const CONSOLE_LINE = 'addcow boot test: sector 2048 written through int 13h'
const EXIT_DEVICE = ['-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04']
/** A small headless guest: what every machine of this spec runs. */
const SMALL = ['-m', '64', '--cpus', '1', '--network', 'none', '--display', 'none']

test.describe.configure({ mode: 'serial' })

let dir: string
let overlay: string
let halts: string
/** Machines other spec files of this worker saved before this one ran. */
let others: string[] = []

/** What `addcow machine list --json` says: the machines of the shared library file. */
async function cliMachines(webApp: WebApp): Promise<{ name: string; cpus: number }[]> {
  return JSON.parse((await addcow(webApp, ['machine', 'list', '--json'])).stdout) as {
    name: string
    cpus: number
  }[]
}

/** Each file's SHA-256 and modification time. */
async function fingerprint(paths: string[]): Promise<string[]> {
  return Promise.all(
    paths.map(async (path) => {
      const hash = createHash('sha256')
        .update(await readFile(path))
        .digest('hex')
      return `${hash} ${(await stat(path)).mtimeMs}`
    }),
  )
}

/** Bytes the overlay holds itself (depth 0 of `addcow map --json`). */
async function allocated(webApp: WebApp): Promise<number> {
  const map = JSON.parse((await addcow(webApp, ['map', '--json', overlay])).stdout) as {
    depth: number
    length: number
  }[]
  return map.filter((extent) => extent.depth === 0).reduce((sum, extent) => sum + extent.length, 0)
}

/** Serious and critical axe violations on the page (desk.spec.ts checks every bare screen). */
async function seriousViolations(page: Page): Promise<string[]> {
  const { violations } = await new AxeBuilder({ page }).analyze()
  return violations
    .filter((violation) => violation.impact === 'serious' || violation.impact === 'critical')
    .map((violation) => `${violation.id}: ${violation.nodes.map((node) => node.target).join(', ')}`)
}

const rowOf = (page: Page, name: string) =>
  page
    .getByRole('table', { name: 'Saved machines' })
    .getByRole('row', { name: new RegExp(`^${name} `) })

test.beforeAll(async ({ webApp }) => {
  // Other spec files of this worker share the app's data folder and may have saved machines.
  others = (await cliMachines(webApp)).map((machine) => machine.name)
  dir = await folder(webApp, 'machines')
  overlay = await bootOverlay(webApp, dir, 'boot', { base: 'base.raw', overlay: 'guest.add-cow' })
  // Exits through isa-debug-exit with status 33 once the boot sector wrote its sector.
  await addcow(webApp, ['machine', 'save', ...SMALL, 'exits', overlay, '--', ...EXIT_DEVICE])
  // Halts after its line: runs until it is stopped. Its own overlay: it is snapshotted live.
  halts = join(dir, 'halts.add-cow')
  await addcow(webApp, ['create', '-b', 'base.raw', '-F', 'raw', halts])
  await addcow(webApp, ['machine', 'save', ...SMALL, 'halts', halts])
})

test('machines saved in the CLI and in the app are one list: new, edit, duplicate, delete', async ({
  page,
  webApp,
}) => {
  // Two full axe runs and eight screenshots: more than the default minute on a busy machine.
  test.setTimeout(240_000)
  await openScreen(page, webApp, 'machines')
  await expect(page.getByRole('heading', { name: 'Machines', exact: true })).toBeVisible()
  await expect(rowOf(page, 'exits')).toContainText('64 MiB · 1 CPU')
  await expect(rowOf(page, 'exits')).toContainText('BIOS · disk')
  await expect(rowOf(page, 'exits')).toContainText('Stopped')
  await expect(rowOf(page, 'halts')).toBeVisible()

  await page.getByRole('button', { name: 'New machine' }).click()
  const form = page.getByRole('dialog').filter({ hasText: 'New machine' })
  await form.getByRole('textbox', { name: 'Machine name' }).fill('from-app')
  await form.getByRole('button', { name: 'Save machine' }).click()
  await expect(form.getByRole('alert')).toContainText('Choose the disk image.')
  const diskPicker = form.getByRole('textbox', { name: 'Disk image' })
  await diskPicker.click()
  // Other spec files of this worker add their images to the same library, and the list draws
  // only its first options: filter it, as a user with many images does, and pick ours by folder.
  await diskPicker.fill('guest.add-cow')
  await page
    .locator('.n-base-select-option')
    .filter({ hasText: `guest.add-cow — ${dir}` })
    .click()
  await form.getByRole('textbox', { name: 'Memory in MiB' }).fill('64')
  await form.getByRole('textbox', { name: 'Virtual CPUs' }).fill('1')
  await form.getByText('No network card').click()
  await form.getByText('A CD-ROM image (ISO), the disk second').click()
  await form.getByRole('textbox', { name: 'CD-ROM image' }).fill(join(dir, 'install.iso'))
  // This host's KVM does not work: the choice is off, with the probe's reason.
  await expect(form.getByRole('radio', { name: 'KVM', exact: true })).toBeDisabled()
  await form.getByText('TCG (emulation, slower)').click()
  await form.getByText('Name', { exact: true }).scrollIntoViewIfNeeded()
  await screenshot(page, 'machine-form')
  expect(await seriousViolations(page)).toEqual([])
  await page.emulateMedia({ colorScheme: 'dark' })
  await screenshot(page, 'machine-form-dark')
  await page.emulateMedia({ colorScheme: 'light' })
  await form.getByRole('button', { name: 'Save machine' }).click()
  await expect(form).toBeHidden()
  await expect(rowOf(page, 'from-app')).toContainText('BIOS · CD-ROM install.iso')
  const saved = (await cliMachines(webApp)).find((machine) => machine.name === 'from-app')
  expect(saved).toMatchObject({
    disk: overlay,
    memoryMiB: 64,
    cpus: 1,
    network: 'none',
    accel: 'tcg',
    boot: { kind: 'cdrom', iso: join(dir, 'install.iso') },
  })

  // Edit: the form holds the machine; the change reaches the CLI.
  await rowOf(page, 'from-app').getByRole('button', { name: 'Edit from-app' }).click()
  const edit = page.getByRole('dialog').filter({ hasText: 'Edit from-app' })
  await expect(edit.getByRole('textbox', { name: 'CD-ROM image' })).toHaveValue(
    join(dir, 'install.iso'),
  )
  await edit.getByRole('textbox', { name: 'Virtual CPUs' }).fill('2')
  await edit.getByRole('button', { name: 'Save machine' }).click()
  await expect(rowOf(page, 'from-app')).toContainText('64 MiB · 2 CPUs')
  expect((await cliMachines(webApp)).find((machine) => machine.name === 'from-app')?.cpus).toBe(2)

  await rowOf(page, 'from-app').getByRole('button', { name: 'Duplicate from-app' }).click()
  const copy = page.getByRole('dialog').filter({ hasText: 'Duplicate from-app' })
  await expect(copy.getByRole('textbox', { name: 'Name of the copy' })).toHaveValue('from-app-copy')
  await copy.getByRole('button', { name: 'Duplicate', exact: true }).click()
  await expect(rowOf(page, 'from-app-copy')).toContainText('64 MiB · 2 CPUs')
  const names = (await cliMachines(webApp)).map((machine) => machine.name)
  expect(names.filter((name) => !others.includes(name))).toEqual([
    'exits',
    'from-app',
    'from-app-copy',
    'halts',
  ])

  await rowOf(page, 'from-app-copy').getByRole('button', { name: 'Delete from-app-copy' }).click()
  const confirm = page.getByRole('dialog').filter({ hasText: 'Delete the machine from-app-copy?' })
  await expect(confirm).toContainText(`Its disk ${overlay} and every other file stay.`)
  await confirm.getByRole('button', { name: 'Delete machine' }).click()
  await expect(rowOf(page, 'from-app-copy')).toHaveCount(0)
  expect((await cliMachines(webApp)).map((machine) => machine.name)).not.toContain('from-app-copy')
  expect(await seriousViolations(page)).toEqual([])
  for (const size of [
    { width: 1280, height: 800 },
    { width: 1024, height: 700 },
  ]) {
    await page.setViewportSize(size)
    const suffix = size.width === 1280 ? '' : `-${size.width}`
    await screenshot(page, `machines${suffix}`)
    await page.emulateMedia({ colorScheme: 'dark' })
    await screenshot(page, `machines${suffix}-dark`)
    await page.emulateMedia({ colorScheme: 'light' })
  }
  await page.setViewportSize({ width: 1280, height: 800 })
})

test('Save as machine on Launch keeps the form; the CLI starts what the app saved', async ({
  page,
  webApp,
}) => {
  await openScreen(page, webApp, 'launch', overlay)
  const machine = page.getByRole('region', { name: 'Machine', exact: true })
  await machine.getByRole('textbox', { name: 'Memory in MiB' }).fill('96')
  await machine.getByRole('textbox', { name: 'Memory in MiB' }).blur()
  await machine.getByRole('button', { name: 'Save as machine' }).click()
  const form = page.getByRole('dialog').filter({ hasText: 'New machine' })
  await expect(form.getByRole('textbox', { name: 'Machine name' })).toHaveValue('guest')
  await expect(form.getByRole('textbox', { name: 'Memory in MiB' })).toHaveValue('96')
  await form.getByRole('button', { name: 'Save machine' }).click()
  await expect(page.getByText('Saved the machine guest.')).toBeVisible()
  const shown = await addcow(webApp, ['machine', 'show', '--json', 'guest'])
  expect(JSON.parse(shown.stdout)).toMatchObject({ name: 'guest', disk: overlay, memoryMiB: 96 })
})

test('Start opens the running machine with its console; the list shows it running', async ({
  page,
  webApp,
}) => {
  test.setTimeout(150_000)
  await openScreen(page, webApp, 'machines')
  await rowOf(page, 'halts').getByRole('button', { name: 'Start halts' }).click()
  await expect(page.getByRole('heading', { name: 'Launch', exact: true })).toBeVisible()
  const vm = page.getByRole('region', { name: 'Virtual machine' })
  await expect(vm.getByRole('status', { name: 'VM status: Running' })).toBeVisible({
    timeout: 60_000,
  })
  await expect(vm.getByRole('log', { name: 'Serial console' })).toContainText(CONSOLE_LINE, {
    timeout: 60_000,
  })
  await expect(page.getByRole('region', { name: 'Machine', exact: true })).toContainText(
    'Machine halts',
  )
  // The command shown is the one running.
  const pid = Number(/QEMU pid (\d+)/.exec((await vm.textContent()) ?? '')?.[1])
  const executed = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0')
  const commandLine = page.getByRole('region', { name: 'Command line' })
  await expect(commandLine.locator('code.binary')).toHaveText(executed[0]!)
  await expect(commandLine.getByRole('row').filter({ hasText: '-name addcow-halts' })).toBeVisible()
  // A live snapshot: the guest goes on writing a new top; the machine's disk follows it.
  await vm
    .getByRole('group', { name: 'Live operations' })
    .getByRole('button', { name: 'Snapshot' })
    .click()
  await expect(vm.getByRole('status').filter({ hasText: 'Snapshot taken' })).toContainText(
    /the guest now writes halts-snap1\.add-cow; halts\.add-cow is frozen \(the guest waited [\d.]+ ms\)/,
    { timeout: 30_000 },
  )
  const snap = join(dir, 'halts-snap1.add-cow')
  await expect(page.getByRole('region', { name: 'Machine', exact: true })).toContainText(
    'halts-snap1.add-cow',
  )
  expect(
    JSON.parse((await addcow(webApp, ['machine', 'show', '--json', 'halts'])).stdout),
  ).toMatchObject({
    disk: snap,
  })
  await expect(vm.getByRole('status', { name: 'VM status: Running' })).toBeVisible()
  for (const size of [
    { width: 1280, height: 800 },
    { width: 1024, height: 700 },
  ]) {
    await page.setViewportSize(size)
    const suffix = size.width === 1280 ? '' : `-${size.width}`
    await screenshot(page, `machine-running${suffix}`)
    await page.emulateMedia({ colorScheme: 'dark' })
    await screenshot(page, `machine-running${suffix}-dark`)
    await page.emulateMedia({ colorScheme: 'light' })
  }
  await page.setViewportSize({ width: 1280, height: 800 })

  // The list says it runs; Open comes back to it (followed, not started again).
  await page.getByRole('link', { name: 'Machines' }).click()
  await expect(rowOf(page, 'halts')).toContainText('Running')
  await expect(rowOf(page, 'halts').getByRole('button', { name: 'Delete halts' })).toBeDisabled()
  await rowOf(page, 'halts').getByRole('button', { name: 'Open halts' }).click()
  await expect(vm.getByRole('status', { name: 'VM status: Running' })).toBeVisible()
  // The halted guest ignores ACPI: Force off ends it.
  await vm.getByRole('button', { name: 'Stop' }).click()
  await vm.getByRole('button', { name: 'Force off' }).click({ timeout: 20_000 })
  await page
    .getByRole('dialog', { name: 'Force the guest off?' })
    .getByRole('button', { name: 'Force off' })
    .click()
  await expect(vm.getByRole('status', { name: /VM status: (Stopped|Exited)/ })).toBeVisible({
    timeout: 30_000,
  })
  // The new top is an overlay on the frozen one, the boot sector's write in the frozen layer.
  const info = JSON.parse((await addcow(webApp, ['info', '--json', snap])).stdout) as {
    'backing-filename': string
  }
  expect(info['backing-filename']).toBe('halts.add-cow')
  await addcow(webApp, ['check', snap])
  await addcow(webApp, ['check', halts])
})

test('Run without saving changes leaves the overlay untouched; Reset to base empties it', async ({
  page,
  webApp,
}) => {
  test.setTimeout(180_000)
  // The CLI starts the machine, saving its changes: the boot sector writes sector 2048 into the
  // overlay and exits with status 33 (execFile rejects a non-zero exit).
  const started = await addcow(webApp, ['machine', 'start', 'exits']).catch(
    (failure: { code?: number }) => failure,
  )
  expect(started).toMatchObject({ code: 33 })
  const files = [overlay, join(dir, 'guest.raw')]
  const before = await fingerprint(files)
  const written = await allocated(webApp)
  expect(written).toBe(65536)
  await page.goto(webApp.url)
  await page.goto(`${webApp.origin}/#/launch?machine=exits`)
  const vm = page.getByRole('region', { name: 'Virtual machine' })
  const discard = vm.getByRole('checkbox', { name: 'Run without saving changes' })
  await discard.check()
  await vm.getByRole('button', { name: 'Launch' }).click()
  await expect(vm.getByRole('log', { name: 'Serial console' })).toContainText(CONSOLE_LINE, {
    timeout: 60_000,
  })
  await expect(vm.getByRole('status', { name: 'VM status: Exited' })).toBeVisible({
    timeout: 60_000,
  })
  await expect(vm).toContainText('QEMU exited with status 33.')
  expect(await fingerprint(files)).toEqual(before)
  expect(await allocated(webApp)).toBe(written)

  await page.getByRole('link', { name: 'Library' }).click()
  await page
    .getByRole('row', { name: /^guest\.add-cow \S*\/machines / })
    .getByRole('button', { name: 'Remove or delete guest.add-cow' })
    .click()
  await page.getByText('Reset to base…', { exact: true }).click()
  const confirm = page.getByRole('dialog').filter({ hasText: 'Reset guest.add-cow to its base?' })
  await expect(confirm).toContainText('1 cluster written in it (64 KiB of guest data)')
  await expect(confirm).toContainText(`it reads ${join(dir, 'base.raw')} again`)
  await screenshot(page, 'library-reset-confirm')
  await confirm.getByRole('button', { name: 'Reset to base' }).click()
  await expect(page.getByText(/Reset guest\.add-cow: 1 cluster thrown away/)).toBeVisible()
  expect(await allocated(webApp)).toBe(0)
  const info = JSON.parse((await addcow(webApp, ['info', '--json', overlay])).stdout) as {
    'backing-filename': string
    'data-file': string
  }
  expect(info).toMatchObject({ 'backing-filename': 'base.raw', 'data-file': 'guest.raw' })
  await addcow(webApp, ['check', overlay])

  // The same run saving its changes writes sector 2048 into the overlay again.
  await page.goto(`${webApp.origin}/#/launch?machine=exits`)
  await expect(discard).not.toBeChecked()
  await vm.getByRole('button', { name: 'Launch' }).click()
  await expect(vm).toContainText('QEMU exited with status 33.', { timeout: 60_000 })
  await expect.poll(() => allocated(webApp)).toBe(65536)
})
