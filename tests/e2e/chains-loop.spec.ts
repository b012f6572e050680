import { execFile } from 'node:child_process'
import { mkdir, open as openFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { expect, runAddcow, SCREENSHOT_DIR, startWebApp, test, type WebApp } from './fixtures'

// A loop of base names in the Chains view (issue 12 item 3): x names y, and y, x's flattened
// child, names x. Opening x's chain never sees the loop (a flattened layer does not open its
// base), so only the dependency graph finds it. The view draws both members in red, with a
// "Loop" badge and the cycle in words, and neither as a root with no base. The loop is closed
// by patching x's header bytes: rebase (CLI and app) refuses to make it.

const run = promisify(execFile)

function shot(name: string): { path: string; animations: 'disabled' } {
  return { path: `${SCREENSHOT_DIR}/${name}.png`, animations: 'disabled' }
}

test.describe.configure({ mode: 'serial' })

let app: WebApp
let stopApp: () => Promise<void>
let folder: string

test.beforeAll(async () => {
  const started = await startWebApp()
  app = started.app
  stopApp = started.stop
  folder = join(app.workDir, 'loop')
  await mkdir(folder, { recursive: true })
  await run('qemu-img', ['create', '-q', '-f', 'raw', join(folder, 'base.raw'), '8M'])
  await run('qemu-io', ['-f', 'raw', '-c', 'write -P 0x33 0 1M', join(folder, 'base.raw')])
  const x = join(folder, 'x.add-cow')
  const y = join(folder, 'y.addcow')
  await runAddcow(['create', '-b', 'base.raw', '-F', 'raw', x], app.dataDir)
  await runAddcow(['create', '-b', 'x.add-cow', '-F', 'add-cow', '-i', 'y.raw', y], app.dataDir)
  await runAddcow(['stream', y], app.dataDir)
  // The refusal the issue asks for, before the loop is forced by hand.
  const refused = await runAddcow(
    ['rebase', '-u', '-b', 'y.addcow', '-F', 'add-cow', x],
    app.dataDir,
  ).catch((error: { stderr: string }) => error)
  expect('stderr' in refused && refused.stderr).toContain(`${x} → ${y} → ${x}`)
  // Close the loop: x's backing name 'base.raw' (bytes 76..83) becomes 'y.addcow' (same
  // length), its backing format (bytes 44..59) 'add-cow'.
  const header = await openFile(x, 'r+')
  try {
    await header.write(Buffer.from('y.addcow'), 0, 8, 76)
    const format = Buffer.alloc(16)
    format.write('add-cow')
    await header.write(format, 0, 16, 44)
  } finally {
    await header.close()
  }
})

test.afterAll(async () => {
  await stopApp()
})

test('the Chains view draws a loop of base names in red, and no member as a root', async ({
  page,
}) => {
  await page.goto(app.url)
  await expect(page.getByRole('heading', { name: 'Library' })).toBeVisible()
  // The Library shows each member of the loop as a Loop with its cycle, not as a base state.
  const loops = page.getByLabel(/^Loop: The base names loop: /)
  await expect(loops).toHaveCount(2)
  await expect(loops.first()).toBeVisible()
  await expect(
    page.getByLabel('Loop: The base names loop: x.add-cow → y.addcow → x.add-cow.', {
      exact: false,
    }),
  ).toHaveCount(1)
  await page.screenshot(shot('library-loop'))
  await page.goto(`${app.origin}/#/chain`)
  await expect(page.getByRole('heading', { name: 'Chains' })).toBeVisible()
  const graph = page.getByRole('group', { name: 'Bases and overlays of the library' })
  const x = graph.getByRole('button', {
    name: /^x\.add-cow, .*in a loop of base names: x\.add-cow → y\.addcow → x\.add-cow/,
  })
  const y = graph.getByRole('button', {
    name: /^y\.addcow, .*in a loop of base names: y\.addcow → x\.add-cow → y\.addcow/,
  })
  await expect(x).toContainText('Loop')
  await expect(y).toContainText('Loop')
  for (const member of [x, y]) {
    await expect(member).not.toHaveAccessibleName(/no base/)
  }
  // Both links of the loop are drawn, as loop links.
  await expect(graph.locator('path.edge[data-status="loop"]')).toHaveCount(2)
  // x's chain, as info shows it: the name that closes the loop is not followed.
  await x.click()
  const chain = page.getByRole('region', { name: 'Chain of x.add-cow' })
  await expect(chain).toContainText('Not followed: it leads back into the chain')
  await page.screenshot(shot('chain-loop'))

  await page.setViewportSize({ width: 1024, height: 700 })
  await page.screenshot(shot('chain-loop-1024'))
  await page.emulateMedia({ colorScheme: 'dark' })
  await expect(graph).toBeVisible()
  await page.screenshot(shot('chain-loop-dark'))
  await page.emulateMedia({ colorScheme: 'light' })
})

test('the Check screen reports the loop as a corruption, with the cycle', async ({ page }) => {
  const x = join(folder, 'x.add-cow')
  const y = join(folder, 'y.addcow')
  await page.goto(app.url)
  await expect(page.getByRole('heading', { name: 'Library' })).toBeVisible()
  await page.goto(`${app.origin}/#/check?image=${encodeURIComponent(y)}`)
  await expect(page.getByRole('heading', { name: 'Check', exact: true })).toBeVisible()
  const result = page.getByRole('status', { name: 'Check result' })
  await expect(result).toContainText('1 corruption')
  const corruptions = page.getByRole('region', { name: 'Corruptions: 1' })
  const loop = corruptions.getByRole('row').filter({ hasText: 'Chain loop' })
  await expect(loop).toContainText(`${y} → ${x} → ${y}`)
  await page.screenshot(shot('check-loop'))
})

test('the rebase wizard refuses, in unsafe mode too, a new base built on the overlay', async ({
  page,
}) => {
  // A fresh pair (the first one is looped already): p ← q, q flattened; p onto q would loop.
  const p = join(folder, 'p.add-cow')
  const q = join(folder, 'q.add-cow')
  await runAddcow(['create', '-b', 'base.raw', '-F', 'raw', p], app.dataDir)
  await runAddcow(['create', '-b', 'p.add-cow', '-F', 'add-cow', q], app.dataDir)
  await runAddcow(['stream', q], app.dataDir)
  await page.goto(app.url)
  await expect(page.getByRole('heading', { name: 'Library' })).toBeVisible()
  await page.goto(`${app.origin}/#/rebase?image=${encodeURIComponent(p)}`)
  await expect(page.getByRole('heading', { name: 'Rebase', exact: true })).toBeVisible()
  const next = page.getByRole('button', { name: 'Next' })
  const step = page.getByRole('region', { name: 'New base' })
  await step.getByRole('button', { name: 'Browse for the new base' }).click()
  const browser = page.getByRole('dialog', { name: 'File browser' })
  await browser.getByRole('textbox', { name: 'Folder path' }).fill(folder)
  await browser.getByRole('textbox', { name: 'Folder path' }).press('Enter')
  await browser.getByRole('option', { name: /^File q\.add-cow/ }).dblclick()
  await expect(browser).toBeHidden()
  await step.getByText('add-cow', { exact: true }).click()
  await next.click()
  await page.getByRole('region', { name: 'Mode' }).getByText('Unsafe').click()
  await next.click()
  await page.getByRole('button', { name: 'Rebase', exact: true }).click()
  const alert = page.getByRole('alert').filter({ hasText: 'the chain would loop' })
  await expect(alert).toContainText(`${p} → ${q} → ${p}`)
  await page.screenshot(shot('rebase-loop-refused'))
  // Nothing was written: p still names its base.
  const { stdout } = await runAddcow(['info', '--json', p], app.dataDir)
  expect(JSON.parse(stdout)).toMatchObject({ 'backing-filename': 'base.raw' })
})
