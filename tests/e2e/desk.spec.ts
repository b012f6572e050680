import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Page } from '@playwright/test'
import { expect, requestFromPage, SCREENSHOT_DIR, startWebApp, test, type WebApp } from './fixtures'
import { seriousViolations } from './axe'
import { addcow, qemuIo, run } from './operations-helpers'

// The desk as a whole: every screen at 1280×800 and 1024×700, light and dark, with an
// accessibility check (axe-core: no serious or critical violation) on each, and the keyboard
// paths a user without a mouse takes (skip link, sidebar, file browser).

let app: WebApp
let stopApp: () => Promise<void>
let folder: string
let base: string
let overlay: string

test.beforeAll(async () => {
  const started = await startWebApp()
  app = started.app
  stopApp = started.stop
  folder = join(app.workDir, 'desk')
  await mkdir(folder, { recursive: true })
  base = join(folder, 'golden.img')
  overlay = join(folder, 'golden-dev.add-cow')
  await run('qemu-img', ['create', '-q', '-f', 'raw', base, '64M'])
  await qemuIo(base, ['write -P 0x11 0 4M'])
  await addcow(app, ['create', '-b', base, overlay])
})

test.afterAll(async () => {
  await stopApp()
})

const SIZES = [
  { width: 1280, height: 800 },
  { width: 1024, height: 700 },
] as const
const THEMES = ['light', 'dark'] as const

/** Screens reached by a route, with the image they show. */
function screens(): { name: string; hash: string; heading: RegExp }[] {
  const image = encodeURIComponent(overlay)
  return [
    { name: 'library', hash: '#/library', heading: /^Library$/ },
    { name: 'chain', hash: `#/chain?image=${image}`, heading: /Chain/ },
    { name: 'allocation', hash: `#/allocation?image=${image}`, heading: /Allocation/ },
    { name: 'check', hash: `#/check?image=${image}`, heading: /Check/ },
    {
      name: 'compare',
      hash: `#/compare?a=${image}&b=${encodeURIComponent(base)}`,
      heading: /Compare/,
    },
    { name: 'commit', hash: `#/commit?image=${image}`, heading: /Commit/ },
    { name: 'flatten', hash: `#/flatten?image=${image}`, heading: /Flatten/ },
    { name: 'rebase', hash: `#/rebase?image=${image}`, heading: /Rebase/ },
    { name: 'launch', hash: `#/launch?image=${image}`, heading: /Launch/ },
    { name: 'machines', hash: '#/machines', heading: /Machines/ },
    { name: 'jobs', hash: '#/jobs', heading: /Jobs/ },
  ]
}

/** Open the app on the library, with the base and the overlay in it. */
async function openApp(page: Page): Promise<void> {
  await page.goto(app.url)
  await expect(page.getByRole('heading', { name: 'Library', exact: true })).toBeVisible()
  expect((await requestFromPage(page, 'library:add-images', { paths: [base, overlay] })).ok).toBe(
    true,
  )
  await expect(page.getByRole('row').filter({ hasText: 'golden-dev.add-cow' })).toBeVisible()
}

for (const theme of THEMES) {
  for (const size of SIZES) {
    test(`every screen at ${size.width}×${size.height}, ${theme}: screenshot and no serious accessibility violation`, async ({
      page,
    }) => {
      // Ten screens, each with a full axe run: more than the default minute on a busy machine.
      test.setTimeout(240_000)
      await page.emulateMedia({ colorScheme: theme })
      await page.setViewportSize(size)
      await openApp(page)
      const failures: string[] = []
      for (const screen of screens()) {
        await page.goto(`${app.origin}/${screen.hash}`)
        await expect(page.getByRole('heading', { level: 1, name: screen.heading })).toBeVisible()
        await page.waitForLoadState('networkidle')
        await page.screenshot({
          path: `${SCREENSHOT_DIR}/desk/${screen.name}-${size.width}-${theme}.png`,
          animations: 'disabled',
        })
        for (const line of await seriousViolations(page)) failures.push(`${screen.name}: ${line}`)
      }
      expect(failures).toEqual([])
    })
  }
}

test('a keyboard user skips to the content, and the menu collapses at 1024 px and stays as left', async ({
  page,
}) => {
  await page.setViewportSize({ width: 1024, height: 700 })
  await openApp(page)
  // Narrow: the menu starts collapsed, the Library's actions are in view.
  const toggle = page.getByRole('button', { name: 'Show the menu' })
  await expect(toggle).toHaveAttribute('aria-expanded', 'false')
  await expect(page.getByRole('link', { name: 'Chains' })).toHaveCount(0)
  const row = page.getByRole('row').filter({ hasText: 'golden-dev.add-cow' })
  await expect(
    row.getByRole('button', { name: 'Remove or delete golden-dev.add-cow' }),
  ).toBeInViewport()
  const written = row.locator('.written-text')
  const box = await written.boundingBox()
  expect(box?.height ?? 0, 'the percentage stays on one line').toBeLessThan(24)

  // The first Tab reaches the skip link; it takes the focus to the screen's content.
  await page.keyboard.press('Tab')
  const skip = page.getByRole('link', { name: 'Skip to content' })
  await expect(skip).toBeFocused()
  await expect(skip).toBeInViewport()
  await page.keyboard.press('Enter')
  await expect(page.locator('main')).toBeFocused()

  // The focus ring is an outline (not a tint like hover).
  await toggle.focus()
  await page.keyboard.press('Shift+Tab')
  await page.keyboard.press('Tab')
  const outline = await toggle.evaluate((element) => getComputedStyle(element).outlineStyle)
  expect(outline).toBe('solid')

  await toggle.click()
  await expect(page.getByRole('button', { name: 'Hide the menu' })).toHaveAttribute(
    'aria-expanded',
    'true',
  )
  await expect(page.getByRole('link', { name: 'Chains' })).toBeVisible()
  await page.reload()
  await expect(page.getByRole('link', { name: 'Chains' })).toBeVisible()
  // One "Jobs": the menu's.
  await expect(page.getByRole('link', { name: 'Jobs' })).toHaveCount(1)
  await expect(page.getByRole('button', { name: /jobs/i })).toHaveCount(0)
})

test('the file browser: one Tab stop, arrows, Home/End, type-ahead, image files marked, last folder', async ({
  page,
}) => {
  const other = join(folder, 'other.img')
  await run('qemu-img', ['create', '-q', '-f', 'raw', other, '8M'])
  // Not an image: the first bytes of an add-cow file, cut short.
  const broken = join(folder, 'broken.add-cow')
  await writeFile(broken, (await readFile(overlay)).subarray(0, 12))
  await openApp(page)
  await page.getByRole('button', { name: 'Add image…' }).click()
  const browser = page.getByRole('dialog', { name: 'File browser' })
  await browser.getByRole('textbox', { name: 'Folder path' }).fill(folder)
  await browser.getByRole('textbox', { name: 'Folder path' }).press('Enter')
  const list = browser.getByRole('listbox', { name: `Contents of ${folder}` })
  await expect(list).toHaveAttribute('aria-multiselectable', 'true')
  const options = list.getByRole('option')
  await expect(options).toHaveCount(5)
  await expect(list.getByRole('option', { name: /golden-dev\.raw/ })).toHaveAccessibleName(
    'File golden-dev.raw, 64 MiB, image file of golden-dev.add-cow',
  )
  // One Tab stop: exactly one option is tabbable.
  await expect(list.locator('[role="option"][tabindex="0"]')).toHaveCount(1)
  await list.getByRole('option').first().focus()
  await page.keyboard.press('End')
  await expect(list.getByRole('option', { name: /^File other\.img/ })).toBeFocused()
  await page.keyboard.press('Home')
  await expect(list.getByRole('option', { name: /^File broken\.add-cow/ })).toBeFocused()
  await page.keyboard.press('ArrowDown')
  await expect(list.getByRole('option', { name: /^File golden-dev\.add-cow/ })).toBeFocused()
  // Type-ahead: "g" goes to the next name with g, "golden." to golden.img.
  await page.keyboard.type('golden.')
  await expect(list.getByRole('option', { name: /^File golden\.img/ })).toBeFocused()
  await page.keyboard.press('ArrowDown')
  await page.keyboard.press('ArrowUp')
  await expect(list.locator('[role="option"][tabindex="0"]')).toHaveAccessibleName(/golden\.img/)
  // Space selects; two files, one of them unreadable.
  await page.keyboard.press('Space')
  await page.keyboard.press('Home')
  await page.keyboard.press('Space')
  await expect(list.locator('[aria-selected="true"]')).toHaveCount(2)
  await page.screenshot({ path: `${SCREENSHOT_DIR}/desk/file-browser-keyboard.png` })
  await browser.getByRole('button', { name: 'Open', exact: true }).click()
  // The readable one is added, the other reported by name.
  await expect(page.getByText(/^Added golden\.img\./)).toBeVisible()
  await expect(page.getByText(/^broken\.add-cow was not added:/)).toBeVisible()

  // The next time, the browser opens where it was.
  await page.getByRole('button', { name: 'Add image…' }).click()
  await expect(browser.getByRole('textbox', { name: 'Folder path' })).toHaveValue(folder)
  await expect(list.getByRole('option').first()).toBeFocused()
  await page.keyboard.press('Escape')
})

test('Properties shows what info says with each file apart, copies the JSON, shows the folder', async ({
  page,
}) => {
  await openApp(page)
  await page.getByRole('button', { name: 'Properties of golden-dev.add-cow' }).click()
  const panel = page.getByRole('dialog', { name: /Properties of golden-dev\.add-cow/ })
  await expect(panel).toBeVisible()
  const layer = panel.getByRole('region', { name: 'This image' })
  await expect(layer).toContainText('add-cow file on disk')
  await expect(layer).toContainText('Image file on disk')
  await expect(layer).toContainText(`0 of ${new Intl.NumberFormat('en-US').format(1024)}`)
  await expect(panel.getByRole('region', { name: 'Base at depth 1' })).toContainText('raw')
  await page.screenshot({ path: `${SCREENSHOT_DIR}/desk/properties.png` })
  expect(await seriousViolations(page)).toEqual([])
  await panel.getByRole('button', { name: 'Show in folder' }).click()
  await expect(page.getByText(`It is in ${folder}`)).toBeVisible()
  await panel.getByRole('button', { name: 'Compare with…' }).click()
  await expect(page.getByRole('heading', { name: 'Compare', level: 1 })).toBeVisible()
})

test('Compare says whether two images show the same disk, and where they first differ', async ({
  page,
}) => {
  const other = join(folder, 'different.img')
  await run('qemu-img', ['create', '-q', '-f', 'raw', other, '64M'])
  await qemuIo(other, ['write -P 0x11 0 2M', 'write -P 0x77 2M 4K'])
  await openApp(page)
  await page.goto(
    `${app.origin}/#/compare?a=${encodeURIComponent(overlay)}&b=${encodeURIComponent(base)}`,
  )
  await page.getByRole('button', { name: 'Compare', exact: true }).click()
  const result = page.getByRole('status', { name: 'Comparison result' })
  await expect(result).toContainText('A guest sees the same content in both images.')
  await page.goto(
    `${app.origin}/#/compare?a=${encodeURIComponent(base)}&b=${encodeURIComponent(other)}`,
  )
  await page.getByRole('button', { name: 'Compare', exact: true }).click()
  await expect(result).toContainText(
    `the first difference is at byte ${new Intl.NumberFormat('en-US').format(2 * 1024 * 1024)} (2 MiB in`,
  )
  // The job names its image, with how long it took.
  await page.getByRole('link', { name: 'Jobs' }).click()
  const job = page.getByRole('listitem', { name: /^Compare .*: Done$/ }).first()
  await expect(job).toContainText(/took (under 1 s|\d+ s)/)
  await expect(job.getByRole('link', { name: 'golden.img' })).toBeVisible()
})

test('the library searches, filters and sorts, from the keyboard too', async ({ page }) => {
  await openApp(page)
  const rows = page.getByRole('table', { name: 'Images in the library' }).getByRole('row')
  await page.getByRole('searchbox', { name: 'Search the library' }).fill('dev')
  await expect(page.getByRole('status').filter({ hasText: /^1 of \d+ images$/ })).toBeVisible()
  await expect(rows.filter({ hasText: 'golden.img' })).toHaveCount(0)
  await page.getByRole('searchbox', { name: 'Search the library' }).fill('')
  // Sort by name, Z to A, with the keyboard: the select opens on Enter and takes arrows.
  const sort = page.getByRole('combobox', { name: 'Sort' })
  await sort.focus()
  await page.keyboard.press('Enter')
  await expect(sort).toHaveAttribute('aria-expanded', 'true')
  await page.getByText('Name, Z to A', { exact: true }).click()
  const names = async (): Promise<string[]> =>
    (await page.locator('.image-name').allTextContents()).map((text) => text.trim())
  await expect.poll(names).toEqual([...(await names())].sort().reverse())
  await page.getByRole('combobox', { name: 'Show' }).click()
  await page.getByText('Bases (used by an overlay)', { exact: true }).click()
  await expect.poll(names).toEqual(['golden.img'])
})
