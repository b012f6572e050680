import { truncate } from 'node:fs/promises'
import { join } from 'node:path'
import { expect, test } from './fixtures'
import {
  addcow,
  folder,
  openScreen,
  qemuIo,
  rawImage,
  screenshot,
  writeGuest,
} from './operations-helpers'

// The commit wizard's blast radius from the dependency graph (issue 12 item 2): a reads the
// base, b stands on a and reads through it, f is a flattened sibling (never reads the base: not
// listed), u cannot be read (listed as "could not be checked", counted until the user says it
// does not use this base). The commit then runs, and qemu-io sees the data in the base.

test('the commit wizard lists images reading through other overlays, and those not checked', async ({
  page,
  webApp,
}) => {
  const dir = await folder(webApp, 'commit-radius')
  const base = await rawImage(join(dir, 'base.raw'), '16M', ['write -P 0x11 0 16M'])
  const names = ['s', 'a', 'f', 'u']
  for (const name of names) {
    await addcow(webApp, ['create', '-b', 'base.raw', '-F', 'raw', join(dir, `${name}.add-cow`)])
  }
  await addcow(webApp, ['create', '-b', 'a.add-cow', '-F', 'add-cow', join(dir, 'b.add-cow')])
  await addcow(webApp, ['stream', join(dir, 'f.add-cow')])
  await writeGuest(webApp, join(dir, 's.add-cow'), ['write -P 0x66 0 64K'])
  // u's bitmap is cut off: its header still names the base.
  await truncate(join(dir, 'u.add-cow'), 4096)

  await openScreen(page, webApp, 'commit', join(dir, 's.add-cow'))
  await expect(page.getByRole('region', { name: 'What will be written' })).toContainText(
    '64 KiB of a 16 MiB disk',
  )
  const next = page.getByRole('button', { name: 'Next' })
  await next.click()

  const others = page.getByRole('region', { name: 'Other images that read through this base' })
  await expect(others).toContainText('2 other images read through this base')
  await expect(others.getByRole('row').filter({ hasText: 'b.add-cow' })).toContainText(
    'through a.add-cow',
  )
  await expect(others.getByRole('row').filter({ hasText: '/a.add-cow' })).toContainText('directly')
  await expect(others).not.toContainText('f.add-cow')
  await expect(others).toContainText('1 image could not be checked')
  await expect(others.getByRole('row').filter({ hasText: 'u.add-cow' })).toContainText(
    'shorter than its header_size',
  )
  await expect(others).toContainText('I understand that these 3 images will change')
  await expect(next).toBeDisabled()
  await screenshot(page, 'commit-wizard-radius')
  await page.emulateMedia({ colorScheme: 'dark' })
  await screenshot(page, 'commit-wizard-radius-dark')
  await page.emulateMedia({ colorScheme: 'light' })
  await page.setViewportSize({ width: 1024, height: 700 })
  await screenshot(page, 'commit-wizard-radius-1024')
  await page.setViewportSize({ width: 1280, height: 800 })

  // The user vouches for u: two images left to confirm.
  await others.getByText('This image does not use this base').click()
  await expect(others).toContainText('I understand that these 2 images will change')
  await others.getByText('I understand that these 2 images will change').click()
  await expect(next).toBeEnabled()
  await next.click()
  await page.getByRole('region', { name: 'Options' }).getByText('Save an undo journal').click()
  await next.click()
  await expect(page.getByRole('region', { name: 'Ready to commit' })).toContainText(
    'changing what 2 other images see',
  )
  await page.getByRole('button', { name: 'Commit into the base' }).click()
  await expect(page.getByRole('status', { name: 'Commit result' })).toContainText(
    '2 other images now see the committed data.',
  )
  await qemuIo(base, ['read -P 0x66 0 64K', 'read -P 0x11 64K 16320K'])
})
