import { spawn } from 'node:child_process'
import { copyFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Page } from '@playwright/test'
import { ADDCOW_BIN, expect, test, type WebApp } from './fixtures'
import {
  addcow,
  compareRaw,
  folder,
  openScreen,
  qemuIo,
  rawImage,
  run,
  screenshot,
  withExport,
} from './operations-helpers'

// Issue 12 item 4 in the browser: a journaled commit cancelled part way is a state the commit
// screen explains (what the base holds, the overlay unchanged, nobody else affected) and
// leaves by Resume or by Roll back. The bytes are judged by qemu-img compare against an
// expected image built with qemu-io on a plain raw copy, never by the app itself.

/** 512 MiB of 0x77 written over a 1 GiB base: 32 windows of the commit's walk to cancel in. */
const WRITES = ['write -P 0x77 64M 512M']

interface Scene {
  dir: string
  base: string
  overlay: string
  /** The base before the commit, and the overlay's guest view (the base with WRITES). */
  original: string
  expected: string
}

async function scene(webApp: WebApp, name: string): Promise<Scene> {
  const dir = await folder(webApp, name)
  const base = await rawImage(join(dir, 'base.raw'), '1G', ['write -P 0x11 0 1M'])
  const original = join(dir, 'original.raw')
  await copyFile(base, original)
  const expected = join(dir, 'expected.raw')
  await copyFile(base, expected)
  await qemuIo(expected, WRITES)
  const overlay = join(dir, 'mine.add-cow')
  await addcow(webApp, ['create', '-b', 'base.raw', '-F', 'raw', overlay])
  await withExport(webApp, overlay, (uri) => qemuIo(uri, WRITES))
  return { dir, base, overlay, original, expected }
}

/** The overlay's guest view, through an export of it, compared with `expected` by qemu-img. */
async function overlayReads(webApp: WebApp, overlay: string, expected: string): Promise<void> {
  await withExport(webApp, overlay, (uri) => compareRaw(uri, expected), { readOnly: true })
}

/** Whether qemu-img compare finds two raw files different (exit 1). */
async function differ(a: string, b: string): Promise<boolean> {
  return run('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', a, b]).then(
    () => false,
    (error: { code?: number }) => error.code === 1,
  )
}

/** Start a journaled commit in the wizard and cancel it once part of it is done. */
async function cancelPartWay(page: Page, webApp: WebApp, overlay: string): Promise<string> {
  await openScreen(page, webApp, 'commit', overlay)
  const next = page.getByRole('button', { name: 'Next' })
  await expect(page.getByRole('region', { name: 'What will be written' })).toContainText(
    '512 MiB of a 1 GiB disk',
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
  const progress = page.getByRole('group', { name: 'Commit in progress' })
  // Cancel once the first windows are in the base (progress above zero), long before the end.
  await expect(progress).toContainText(/[1-9][\d.]* MiB of 512 MiB/)
  await progress.getByRole('button', { name: 'Cancel the commit' }).click()
  return undo
}

test('a cancelled commit says what the base holds, then resumes to the expected bytes', async ({
  page,
  webApp,
}) => {
  const { base, overlay, original, expected } = await scene(webApp, 'stop-resume')
  const undo = await cancelPartWay(page, webApp, overlay)

  const card = page.getByRole('region', { name: 'Interrupted commit' })
  await expect(card).toContainText('The commit into base.raw was cancelled part way')
  await expect(card).toContainText(/now holds [\d.]+ MiB of the 512 MiB to commit, at 64 MiB–/)
  await expect(card).toContainText('The overlay still reads the same')
  await expect(card).toContainText('No other image reads through the base.')
  await expect(card).toContainText(undo)
  // Resume is the one way on: the wizard's own run button would start the same commit again.
  await expect(page.getByRole('button', { name: 'Commit into the base' })).toBeHidden()
  await screenshot(page, 'commit-interrupted')
  await page.emulateMedia({ colorScheme: 'dark' })
  await screenshot(page, 'commit-interrupted-dark')
  await page.emulateMedia({ colorScheme: 'light' })

  // The base holds part of the commit: neither what it was nor the overlay's view.
  expect(await differ(base, original)).toBe(true)
  expect(await differ(base, expected)).toBe(true)
  await overlayReads(webApp, overlay, expected)

  // Its own commit does not flag the overlay "Base changed": the Library says it matches.
  await page.getByRole('link', { name: 'Library' }).click()
  const row = page.getByRole('row', { name: /^mine\.add-cow \S*\/stop-resume / })
  await expect(row).toContainText('Base matches')
  await expect(row).not.toContainText('Base changed')
  await page.goBack()

  await card.getByRole('button', { name: 'Resume the commit' }).click()
  const result = page.getByRole('status', { name: 'Commit result' })
  await expect(result).toContainText('Copied')
  await expect(result).toContainText(undo)
  await expect(card).toBeHidden()
  await compareRaw(base, expected)
  await overlayReads(webApp, overlay, expected)
})

test('a cancelled commit is rolled back: the base as it was, the overlay unchanged', async ({
  page,
  webApp,
}) => {
  const { base, overlay, original, expected } = await scene(webApp, 'stop-rollback')
  const undo = await cancelPartWay(page, webApp, overlay)

  const card = page.getByRole('region', { name: 'Interrupted commit' })
  await card.getByRole('button', { name: 'Roll back what was committed' }).click()
  const panel = page.getByRole('region', { name: 'Roll back a commit' })
  await expect(panel.getByRole('textbox', { name: 'Undo journal to roll back' })).toHaveValue(undo)
  await panel
    .getByRole('group', { name: 'Confirm the rollback' })
    .getByRole('button', { name: 'Roll back', exact: true })
    .click()
  const rolledBack = panel.getByRole('status', { name: 'Rollback result' })
  await expect(rolledBack).toContainText('Rolled back')
  await expect(card).toBeHidden()
  await screenshot(page, 'commit-interrupted-rolled-back')

  await compareRaw(base, original)
  await overlayReads(webApp, overlay, expected)
})

test('a live commit cut short by kill -9 of its export is shown, then rolled back', async ({
  page,
  webApp,
}) => {
  const dir = await folder(webApp, 'live-killed')
  const base = await rawImage(join(dir, 'base.raw'), '64M', ['write -P 0x11 0 1M'])
  const original = join(dir, 'original.raw')
  await copyFile(base, original)
  const overlay = join(dir, 'live.add-cow')
  await addcow(webApp, ['create', '-b', 'base.raw', '-F', 'raw', overlay])
  const control = join(dir, 'live.control')
  const undo = join(dir, 'live.undo')
  // `addcow serve` as a VM's export would run it, with a journaled live commit going on.
  const child = spawn(
    process.execPath,
    [ADDCOW_BIN, 'serve', '--socket', join(dir, 'live.sock'), '--control-socket', control, overlay],
    { env: { ...process.env, ADDCOW_DATA_DIR: webApp.dataDir }, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  const exited = new Promise((resolve) => child.once('exit', resolve))
  try {
    const uri = await new Promise<string>((resolve, reject) => {
      let output = ''
      child.stdout.on('data', (chunk: Buffer) => {
        output += chunk.toString()
        const match = /(nbd\+unix:\S+)/.exec(output)
        if (match?.[1]) resolve(match[1])
      })
      void exited.then(() => reject(new Error(`addcow serve exited: ${output}`)))
    })
    await qemuIo(uri, ['write -P 0x77 0 16M'])
    await addcow(webApp, [
      'job',
      'commit',
      '--undo',
      undo,
      '--rate',
      '1M',
      '--detach',
      '--control-socket',
      control,
    ])
    await expect
      .poll(
        async () =>
          (
            JSON.parse(
              (
                await addcow(webApp, [
                  'job',
                  'status',
                  'commit-1',
                  '--json',
                  '--control-socket',
                  control,
                ])
              ).stdout,
            ) as { done: number }
          ).done,
        { timeout: 30_000 },
      )
      .toBeGreaterThanOrEqual(2 * 1024 * 1024)
  } finally {
    child.kill('SIGKILL')
    await exited
  }
  expect(await differ(base, original)).toBe(true)

  await openScreen(page, webApp, 'commit', overlay)
  const card = page.getByRole('region', { name: 'Interrupted commit' })
  await expect(card).toContainText('The commit into base.raw stopped part way')
  await expect(card).toContainText(/now holds [\d.]+ MiB of the 16 MiB to commit, at 0 B–/)
  await expect(card).toContainText(/Why it stopped: The live commit in process \d+ did not end/)
  await expect(card).toContainText(undo)
  await screenshot(page, 'commit-interrupted-live')
  await card.getByRole('button', { name: 'Roll back what was committed' }).click()
  const panel = page.getByRole('region', { name: 'Roll back a commit' })
  await expect(panel.getByRole('textbox', { name: 'Undo journal to roll back' })).toHaveValue(undo)
  await panel
    .getByRole('group', { name: 'Confirm the rollback' })
    .getByRole('button', { name: 'Roll back', exact: true })
    .click()
  await expect(panel.getByRole('status', { name: 'Rollback result' })).toContainText('Rolled back')
  await expect(card).toBeHidden()
  await compareRaw(base, original)
})
