import { access, copyFile } from 'node:fs/promises'
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
  writeGuest,
} from './operations-helpers'

// The commit wizard on real files: an overlay with data written through NBD by qemu-io, a
// second overlay on the same base (the blast radius, which must be confirmed), an undo
// journal, and the base checked by qemu-io afterwards; then the rollback of a journaled commit,
// this one's and an earlier one's, with the base compared to its original by qemu-img.

test('the commit wizard shows what it writes and who shares the base, then commits', async ({
  page,
  webApp,
}) => {
  const dir = await folder(webApp, 'commit')
  const base = await rawImage(join(dir, 'base.raw'), '16M', ['write -P 0x11 0 16M'])
  const mine = join(dir, 'mine.add-cow')
  const theirs = join(dir, 'theirs.add-cow')
  await addcow(webApp, ['create', '-b', 'base.raw', '-F', 'raw', mine])
  await addcow(webApp, ['create', '-b', 'base.raw', '-F', 'raw', theirs])
  await writeGuest(webApp, mine, ['write -P 0x77 1M 128K'])

  await openScreen(page, webApp, 'commit', mine)
  await expect(page.getByRole('heading', { name: 'Commit', exact: true })).toBeVisible()

  // Step 1: what will be written.
  const written = page.getByRole('region', { name: 'What will be written' })
  await expect(written).toContainText('Clusters to copy')
  await expect(written).toContainText('2 of 64 KiB each')
  await expect(written).toContainText('128 KiB of a 16 MiB disk')
  await expect(written).toContainText(base)
  await page.getByRole('button', { name: 'Next' }).click()

  // Step 2: the other overlay on the base; Next waits for the confirmation.
  const others = page.getByRole('region', { name: 'Other images that read through this base' })
  await expect(others).toContainText('1 other image reads through this base')
  await expect(others.getByRole('row').filter({ hasText: 'theirs.add-cow' })).toContainText(
    'add-cow',
  )
  const next = page.getByRole('button', { name: 'Next' })
  await expect(next).toBeDisabled()
  await screenshot(page, 'commit-wizard')
  await page.emulateMedia({ colorScheme: 'dark' })
  await screenshot(page, 'commit-wizard-dark')
  await page.emulateMedia({ colorScheme: 'light' })
  await others.getByText('I understand that this image will change').click()
  await expect(next).toBeEnabled()
  await next.click()

  // Step 3: the undo journal is on by default, with a path beside the overlay.
  const options = page.getByRole('region', { name: 'Options' })
  const undoField = options.getByRole('textbox', { name: 'Undo journal file' })
  await expect(undoField).toHaveValue(new RegExp(`^${dir}/mine\\.add-cow\\.\\d{8}-\\d{6}\\.undo$`))
  const undo = await undoField.inputValue()
  await undoField.fill('not/absolute.undo')
  await expect(options.getByRole('alert')).toContainText('needs an absolute path')
  await expect(next).toBeDisabled()
  await undoField.fill(undo)
  await next.click()

  // Step 4: commit, and what it did.
  const commit = page.getByRole('region', { name: 'Ready to commit' })
  await expect(commit).toContainText('Copy 2 clusters (128 KiB) from mine.add-cow into base.raw')
  await expect(commit).toContainText('changing what 1 other image see')
  await page.getByRole('button', { name: 'Commit into the base' }).click()
  const result = page.getByRole('status', { name: 'Commit result' })
  await expect(result).toContainText('Copied 2 clusters (128 KiB) into')
  await expect(result).toContainText('The overlay was emptied')
  await expect(result).toContainText('1 other image now sees the committed data.')
  await expect(result).toContainText(undo)

  // The base holds the overlay's data now, the rest is untouched, and the journal exists.
  await qemuIo(base, ['read -P 0x77 1M 128K', 'read -P 0x11 0 1M', 'read -P 0x11 1152K 14976K'])
  await access(undo)
  // The emptied overlay reads everything from the base: its guest view still shows the data.
  await writeGuest(webApp, mine, ['read -P 0x77 1M 128K'])
})

test('a commit is refused without a base, with the reason and what to do', async ({
  page,
  webApp,
}) => {
  const dir = await folder(webApp, 'commit-alone')
  const alone = join(dir, 'alone.add-cow')
  await addcow(webApp, ['create', '-s', '4M', alone])
  await openScreen(page, webApp, 'commit', alone)
  const alert = page.getByRole('alert').filter({ hasText: 'The overlay could not be read' })
  await expect(alert).toContainText(`${alone} has no backing file, so a commit has nowhere to go.`)
  await expect(alert).toContainText('What you can do:')
  await expect(alert.getByRole('button', { name: 'Try again' })).toBeVisible()
})

test('a journaled commit is rolled back: the base is as it was and the overlay has its data', async ({
  page,
  webApp,
}) => {
  const dir = await folder(webApp, 'commit-rollback')
  const base = await rawImage(join(dir, 'base.raw'), '16M', [
    'write -P 0x11 0 16M',
    'write -P 0x33 1M 64K',
  ])
  const original = join(dir, 'original.raw')
  await copyFile(base, original)
  const mine = join(dir, 'mine.add-cow')
  await addcow(webApp, ['create', '-b', 'base.raw', '-F', 'raw', mine])
  await writeGuest(webApp, mine, ['write -P 0x77 1M 128K'])

  // The commit, with the undo journal proposed in step 3; nobody else uses the base.
  await openScreen(page, webApp, 'commit', mine)
  const next = page.getByRole('button', { name: 'Next' })
  await expect(page.getByRole('region', { name: 'What will be written' })).toContainText(
    '128 KiB of a 16 MiB disk',
  )
  await next.click()
  await expect(
    page.getByRole('region', { name: 'Other images that read through this base' }),
  ).toBeVisible()
  await next.click()
  const undo = await page
    .getByRole('region', { name: 'Options' })
    .getByRole('textbox', { name: 'Undo journal file' })
    .inputValue()
  await next.click()
  await page.getByRole('button', { name: 'Commit into the base' }).click()
  const committed = page.getByRole('status', { name: 'Commit result' })
  await expect(committed).toContainText('Copied 2 clusters (128 KiB) into')
  await qemuIo(base, ['read -P 0x77 1M 128K'])

  // Roll back this commit: asked first, with what it does, then run, then what it restored.
  await committed.getByRole('button', { name: 'Roll back this commit' }).click()
  const panel = page.getByRole('region', { name: 'Roll back a commit' })
  await expect(panel.getByRole('textbox', { name: 'Undo journal to roll back' })).toHaveValue(undo)
  const confirm = panel.getByRole('group', { name: 'Confirm the rollback' })
  await expect(confirm).toContainText('rewrites the base')
  await expect(confirm).toContainText('gives the overlay its committed data back')
  await confirm.getByRole('button', { name: 'Roll back', exact: true }).click()
  const rolledBack = panel.getByRole('status', { name: 'Rollback result' })
  await expect(rolledBack).toContainText('Rolled back')
  await expect(rolledBack).toContainText('Put back 128 KiB of the base')
  await expect(rolledBack).toContainText('Gave 2 clusters back to the overlay')
  await expect(rolledBack).toContainText(base)
  await screenshot(page, 'commit-rollback')

  // The base is byte for byte what it was; the overlay's guest view holds its data again.
  await compareRaw(base, original)
  await writeGuest(webApp, mine, [
    'read -P 0x11 0 1M',
    'read -P 0x77 1M 128K',
    'read -P 0x11 1152K 14976K',
  ])

  // An earlier commit (by the CLI), its journal picked in the file browser; the base changed
  // since, so the rollback is refused until "roll back anyway".
  const earlier = join(dir, 'earlier.undo')
  await addcow(webApp, ['commit', '--undo', earlier, mine])
  await qemuIo(base, ['write -P 0x22 4M 64K'])
  await panel.getByRole('button', { name: 'Close' }).click()
  await page.getByRole('button', { name: 'Roll back an earlier commit…' }).click()
  await panel.getByRole('button', { name: 'Browse for the undo journal to roll back' }).click()
  const browser = page.getByRole('dialog', { name: 'File browser' })
  await browser.getByRole('textbox', { name: 'Folder path' }).fill(dir)
  await browser.getByRole('textbox', { name: 'Folder path' }).press('Enter')
  await browser.getByRole('option', { name: /^File earlier\.undo,/ }).dblclick()
  await expect(browser).toBeHidden()
  await expect(panel.getByRole('textbox', { name: 'Undo journal to roll back' })).toHaveValue(
    earlier,
  )
  await panel.getByRole('button', { name: 'Roll back…' }).click()
  await panel
    .getByRole('group', { name: 'Confirm the rollback' })
    .getByRole('button', { name: 'Roll back', exact: true })
    .click()
  const refused = panel.getByRole('alert').filter({ hasText: 'The rollback did not finish' })
  await expect(refused).toContainText('changed after the commit')
  await qemuIo(base, ['read -P 0x77 1M 128K'])
  await refused.getByRole('button', { name: 'Roll back anyway' }).click()
  await expect(rolledBack).toContainText('Put back 128 KiB of the base')
  // The committed range is back as it was; the later write outside it stays.
  await qemuIo(base, [
    'read -P 0x11 0 1M',
    'read -P 0x33 1M 64K',
    'read -P 0x11 1088K 64K',
    'read -P 0x22 4M 64K',
  ])
  await writeGuest(webApp, mine, ['read -P 0x77 1M 128K'])
})
