import { copyFile } from 'node:fs/promises'
import { join } from 'node:path'
import { expect, test } from './fixtures'
import {
  addcow,
  compareRaw,
  folder,
  openScreen,
  qemuIo,
  rawImage,
  screenshot,
  withExport,
  writeGuest,
} from './operations-helpers'

// The rebase wizard on real files: a safe rebase onto a base that differs in 256 KiB copies
// exactly those clusters into the overlay, and the guest view (served over NBD, compared by
// qemu-img) is the same as before.

test('the rebase wizard points an overlay at a new base without changing its guest view', async ({
  page,
  webApp,
}) => {
  const dir = await folder(webApp, 'rebase')
  const old = await rawImage(join(dir, 'old.raw'), '8M', ['write -P 0x41 0 8M'])
  const newer = join(dir, 'new.raw')
  await copyFile(old, newer)
  await qemuIo(newer, ['write -P 0x42 4M 256K'])
  const overlay = join(dir, 'moved.add-cow')
  await addcow(webApp, ['create', '-b', 'old.raw', '-F', 'raw', overlay])
  await writeGuest(webApp, overlay, ['write -P 0x43 1M 64K'])
  const expected = join(dir, 'expected.raw')
  await copyFile(old, expected)
  await qemuIo(expected, ['write -P 0x43 1M 64K'])

  await openScreen(page, webApp, 'rebase', overlay)
  await expect(page.getByRole('heading', { name: 'Rebase', exact: true })).toBeVisible()
  const next = page.getByRole('button', { name: 'Next' })

  // Step 1: the current base, and the new one picked in the file browser.
  const step = page.getByRole('region', { name: 'New base' })
  await expect(step).toContainText(old)
  await expect(next).toBeDisabled()
  await step.getByRole('button', { name: 'Browse for the new base' }).click()
  const browser = page.getByRole('dialog', { name: 'File browser' })
  await browser.getByRole('textbox', { name: 'Folder path' }).fill(dir)
  await browser.getByRole('textbox', { name: 'Folder path' }).press('Enter')
  await browser.getByRole('option', { name: 'File new.raw, 8 MiB' }).dblclick()
  await expect(browser).toBeHidden()
  await step.getByText('raw', { exact: true }).click()
  await expect(step).toContainText('Stored in the overlay as new.raw (relative to its folder).')
  await next.click()

  // Step 2: safe mode by default, each mode explained.
  const mode = page.getByRole('region', { name: 'Mode' })
  await expect(mode.getByRole('radio', { name: /Safe/ })).toBeChecked()
  await expect(mode).toContainText('The guest sees exactly the same disk afterwards.')
  await expect(mode).toContainText('Writes the new name into the overlay and nothing else')
  await screenshot(page, 'rebase-wizard')
  await next.click()

  const run = page.getByRole('region', { name: 'Ready to rebase' })
  await expect(run).toContainText('Point moved.add-cow at new.raw (raw) in safe mode')
  await page.getByRole('button', { name: 'Rebase', exact: true }).click()
  const result = page.getByRole('status', { name: 'Rebase result' })
  await expect(result).toContainText('moved.add-cow now uses new.raw')
  await expect(result).toContainText('copied 4 clusters where the bases differ')

  const { stdout } = await addcow(webApp, ['info', '--json', overlay])
  expect(JSON.parse(stdout)).toMatchObject({
    'backing-filename': 'new.raw',
    'full-backing-filename': newer,
  })
  await withExport(webApp, overlay, (uri) => compareRaw(uri, expected), { readOnly: true })
})
