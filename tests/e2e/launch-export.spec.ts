import AxeBuilder from '@axe-core/playwright'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect, test } from './fixtures'
import { bootOverlay, folder, openScreen, run, screenshot } from './operations-helpers'

// The Launch view's "Export…": the machine on screen copied as a shell script (export + QEMU)
// and downloaded as a libvirt domain that libvirt's schema accepts, both naming the socket of
// the command line shown.

let overlay: string

test.beforeAll(async ({ webApp }) => {
  const dir = await folder(webApp, 'launch-export')
  overlay = await bootOverlay(webApp, dir, 'boot', { base: 'base.raw', overlay: 'export.add-cow' })
})

test('Export… copies the shell script and downloads a libvirt domain of the machine shown', async ({
  page,
  webApp,
  context,
}) => {
  // A full axe run and two screenshots: more than the default minute on a busy machine.
  test.setTimeout(180_000)
  await context.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: webApp.origin })
  await openScreen(page, webApp, 'launch', overlay)
  const machine = page.getByRole('region', { name: 'Machine', exact: true })
  const commandLine = page.getByRole('region', { name: 'Command line' })
  await machine.getByText('None (headless: serial console only)').click()
  await machine.getByRole('textbox', { name: 'Memory in MiB' }).fill('96')
  await machine.getByRole('textbox', { name: 'Memory in MiB' }).blur()
  const memoryRow = commandLine.getByRole('row').filter({ hasText: '-m 96' })
  await expect(memoryRow).toBeVisible()
  const socket = /server\.path=([^,\s]+)/.exec(
    (await commandLine.getByRole('row').filter({ hasText: '-blockdev' }).innerText()) ?? '',
  )?.[1]
  expect(socket).toBeTruthy()

  const exportButton = commandLine.getByRole('button', { name: 'Export this machine' })
  await exportButton.click()
  await expect(page.getByText('Download libvirt XML')).toBeVisible()
  await screenshot(page, 'launch-export')
  await page.setViewportSize({ width: 1024, height: 700 })
  await screenshot(page, 'launch-export-1024')
  await page.setViewportSize({ width: 1280, height: 800 })
  const violations = (await new AxeBuilder({ page }).analyze()).violations.filter(
    (violation) => violation.impact === 'serious' || violation.impact === 'critical',
  )
  expect(violations.map((violation) => `${violation.id}: ${violation.help}`)).toEqual([])

  await page.getByText('Copy shell script').click()
  await expect(page.getByText(/Copied the shell script/)).toBeVisible()
  const script = await page.evaluate(() => navigator.clipboard.readText())
  expect(script).toMatch(/^#!\/bin\/sh\n/)
  expect(script).toContain(`"$ADDCOW" serve --socket ${socket} ${overlay} >"$ready" &`)
  expect(script).toContain('  -m 96 \\\n')
  expect(script).toContain('trap clean_up EXIT')

  await exportButton.click()
  const [download] = await Promise.all([
    page.waitForEvent('download'),
    page.getByText('Download libvirt XML').click(),
  ])
  expect(download.suggestedFilename()).toBe('export.add-cow.libvirt.xml')
  const file = join(await folder(webApp, 'launch-export-download'), 'domain.xml')
  await download.saveAs(file)
  const xml = await readFile(file, 'utf8')
  expect(xml).toContain(`<host transport='unix' socket='${socket}'/>`)
  expect(xml).toContain("<memory unit='MiB'>96</memory>")
  const validated = await run('virt-xml-validate', [file, 'domain'])
  // run() rejects on a non-zero exit: the schema accepted it.
  expect(validated.stdout + validated.stderr).toContain('validates')
})
