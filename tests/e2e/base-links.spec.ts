import { access, mkdir, rename } from 'node:fs/promises'
import { join } from 'node:path'
import type { Page } from '@playwright/test'
import { expect, requestFromPage, test } from './fixtures'
import {
  addcow,
  compareRaw,
  folder,
  rawImage,
  run,
  screenshot,
  withExport,
} from './operations-helpers'
import { ADDCOW_BIN } from './fixtures'

// Issue 12 items 5 and 6 in the browser: the base states (matches, unverified with Record now,
// missing with Locate…), Remove with Undo, and Delete… that refuses while another image reads
// through the image and otherwise deletes the add-cow file with its image file.

async function pickInBrowser(page: Page, dir: string, file: RegExp): Promise<void> {
  const browser = page.getByRole('dialog', { name: 'File browser' })
  await browser.getByRole('textbox', { name: 'Folder path' }).fill(dir)
  await browser.getByRole('textbox', { name: 'Folder path' }).press('Enter')
  await browser.getByRole('option', { name: file }).dblclick()
  await expect(browser).toBeHidden()
}

test('base states, Record now, Locate, Remove with Undo and a refused then allowed Delete', async ({
  page,
  webApp,
}) => {
  const dir = await folder(webApp, 'links')
  const base = await rawImage(join(dir, 'base.raw'), '16M', ['write -P 0x11 0 16M'])
  const mine = join(dir, 'mine.add-cow')
  await addcow(webApp, ['create', '-b', 'base.raw', '-F', 'raw', mine])
  const child = join(dir, 'child.add-cow')
  await addcow(webApp, ['create', '-b', 'mine.add-cow', '-F', 'add-cow', child])
  // Made with another library (as on another machine): no fingerprint recorded here.
  const foreign = join(dir, 'foreign.add-cow')
  await run(process.execPath, [ADDCOW_BIN, 'create', '-b', 'base.raw', '-F', 'raw', foreign], {
    env: { ...process.env, ADDCOW_DATA_DIR: join(dir, 'elsewhere') },
  })
  // An overlay whose base is moved into a subfolder afterwards.
  await rawImage(join(dir, 'old.raw'), '8M', ['write -P 0x22 0 8M'])
  const moved = join(dir, 'moved.add-cow')
  await addcow(webApp, ['create', '-b', 'old.raw', '-F', 'raw', moved])
  await withExport(webApp, moved, async (uri) => {
    await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 1M 64K', uri])
  })
  await mkdir(join(dir, 'bases'))
  await rename(join(dir, 'old.raw'), join(dir, 'bases', 'old.raw'))

  await page.goto(webApp.url)
  const added = await requestFromPage(page, 'library:add-images', { paths: [foreign] })
  expect(added.ok).toBe(true)
  const rowOf = (name: string) =>
    // The name, then its folder (other specs on this server use the same file names).
    page.getByRole('row', { name: new RegExp(`^${name.replace(/[.]/g, '\\.')} \\S*/links `) })
  await expect(rowOf('mine.add-cow')).toContainText('Base matches')
  await expect(rowOf('foreign.add-cow')).toContainText('Unverified')
  await expect(rowOf('foreign.add-cow')).not.toContainText('Base matches')
  await expect(rowOf('moved.add-cow')).toContainText('Base missing')
  await screenshot(page, 'library-base-states')
  await page.setViewportSize({ width: 1024, height: 700 })
  await screenshot(page, 'library-base-states-1024')
  await page.emulateMedia({ colorScheme: 'dark' })
  await screenshot(page, 'library-base-states-dark')
  await page.emulateMedia({ colorScheme: 'light' })
  await page.setViewportSize({ width: 1280, height: 800 })

  // The same states, from the same engine function, in Check, Launch and Chains.
  const screen = async (route: string, image: string): Promise<void> => {
    await page.goto(`${webApp.origin}/#/${route}?image=${encodeURIComponent(image)}`)
  }
  await screen('check', foreign)
  await expect(page.getByRole('group', { name: 'Base', exact: true })).toContainText('Unverified')
  await expect(
    page
      .getByRole('group', { name: 'Base', exact: true })
      .getByRole('button', { name: 'Record the base of foreign.add-cow now' }),
  ).toBeVisible()
  await screenshot(page, 'check-base-unverified')
  await screen('launch', moved)
  await expect(page.getByRole('group', { name: 'Base', exact: true })).toContainText('Base missing')
  await screenshot(page, 'launch-base-missing')
  await screen('chain', foreign)
  await expect(page.getByRole('group', { name: 'Base', exact: true })).toContainText('Unverified')
  await expect(
    page.getByRole('button', {
      name: /^foreign\.add-cow, .*base unverified \(no fingerprint recorded\)/,
    }),
  ).toContainText('Unverified')
  await screenshot(page, 'chains-base-unverified')
  await page.goto(webApp.url)

  // Record now: asked first, then the base matches.
  await rowOf('foreign.add-cow')
    .getByRole('button', { name: 'Record the base of foreign.add-cow now' })
    .click()
  await page.getByRole('button', { name: 'Record now', exact: true }).click()
  await expect(rowOf('foreign.add-cow')).toContainText('Base matches')

  // Locate: the moved base, checked, stored relative to the overlay's folder.
  await rowOf('moved.add-cow')
    .getByRole('button', { name: 'Locate the base of moved.add-cow' })
    .click()
  await pickInBrowser(page, join(dir, 'bases'), /^File old\.raw,/)
  await expect(
    page.getByText('moved.add-cow now uses old.raw (size and fingerprint match).'),
  ).toBeVisible()
  await expect(rowOf('moved.add-cow')).toContainText('Base matches')
  const info = JSON.parse((await addcow(webApp, ['info', '--json', moved])).stdout) as Record<
    string,
    unknown
  >
  expect(info['backing-filename']).toBe('bases/old.raw')
  await withExport(
    webApp,
    moved,
    async (uri) => {
      const { stdout } = await run('qemu-io', [
        '-r',
        '-f',
        'raw',
        '-c',
        'read -P 0x22 0 1M',
        '-c',
        'read -P 0x33 1M 64K',
        uri,
      ])
      expect(stdout).not.toMatch(/Pattern verification failed/)
    },
    { readOnly: true },
  )

  // Delete… refuses while child.add-cow reads through mine.add-cow, naming it.
  await rowOf('mine.add-cow').getByRole('button', { name: 'Remove or delete mine.add-cow' }).click()
  await page.getByText('Delete files…', { exact: true }).click()
  const refusal = page.getByRole('dialog').filter({ hasText: 'mine.add-cow cannot be deleted' })
  await expect(refusal).toContainText(`${child} (reads through it)`)
  await screenshot(page, 'library-delete-refused')
  await refusal.getByRole('button', { name: 'Close', exact: true }).click()
  await access(mine)
  await access(join(dir, 'mine.raw'))

  // The child has no dependents: both its files go, its base stays.
  await rowOf('child.add-cow')
    .getByRole('button', { name: 'Remove or delete child.add-cow' })
    .click()
  await page.getByText('Delete files…', { exact: true }).click()
  const confirm = page.getByRole('dialog').filter({ hasText: 'Delete the files of child.add-cow?' })
  await expect(confirm).toContainText(child)
  await expect(confirm).toContainText(join(dir, 'child.raw'))
  await screenshot(page, 'library-delete-confirm')
  await confirm.getByRole('button', { name: 'Delete files' }).click()
  await expect(rowOf('child.add-cow')).toHaveCount(0)
  await expect(access(child)).rejects.toThrow()
  await expect(access(join(dir, 'child.raw'))).rejects.toThrow()
  await access(mine)
  await compareRaw(base, base)

  // Remove from the library, then Undo: the row comes back, the files never moved.
  await rowOf('foreign.add-cow')
    .getByRole('button', { name: 'Remove or delete foreign.add-cow' })
    .click()
  await page.getByText('Remove from the library', { exact: true }).click()
  await expect(rowOf('foreign.add-cow')).toHaveCount(0)
  await page.getByRole('button', { name: 'Undo the removal of foreign.add-cow' }).click()
  await expect(rowOf('foreign.add-cow')).toContainText('Base matches')
})
