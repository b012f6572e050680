import { execFile } from 'node:child_process'
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { expect, runAddcow, SCREENSHOT_DIR, startWebApp, test, type WebApp } from './fixtures'

// A library file with fields of the wrong type (issue 13 item 6): the Library lists every entry
// that can be read and shows a warning banner naming the file, the entries and the copy kept
// beside it, instead of "No Data". This file runs its own `addcow web` (its own library).

const run = promisify(execFile)

function shot(name: string): { path: string; animations: 'disabled' } {
  return { path: `${SCREENSHOT_DIR}/${name}.png`, animations: 'disabled' }
}

test.describe.configure({ mode: 'serial' })

let app: WebApp
let stopApp: () => Promise<void>

test.beforeAll(async () => {
  const started = await startWebApp()
  app = started.app
  stopApp = started.stop
})

test.afterAll(async () => {
  await stopApp()
})

test('a library file with entries of the wrong type: warning banner, readable entries listed', async ({
  page,
}) => {
  const folder = join(app.workDir, 'vms')
  await mkdir(folder, { recursive: true })
  await run('qemu-img', ['create', '-q', '-f', 'raw', join(folder, 'base.img'), '16M'])
  await runAddcow(
    ['create', '-b', 'base.img', '-F', 'raw', join(folder, 'work.add-cow')],
    app.dataDir,
  )
  const file = join(app.dataDir, 'library.json')
  const data = JSON.parse(await readFile(file, 'utf8')) as Record<string, unknown[]>
  expect(data.images!.length).toBeGreaterThan(0)
  // One image entry with a number for its path, a trusted pair with an unknown reason, and a
  // fingerprint list that is a string: what a hand edit or another tool can leave.
  data.images!.push({ path: 42, addedAt: '2026-01-01T00:00:00.000Z' })
  data.trusted!.push({ from: '/a', to: '/b', reason: 'because', at: '' })
  const damaged = { ...data, fingerprints: 'none' }
  await writeFile(file, JSON.stringify(damaged, null, 2))

  for (const [width, height, scheme] of [
    [1280, 800, 'light'],
    [1024, 700, 'light'],
    [1280, 800, 'dark'],
  ] as const) {
    await page.setViewportSize({ width, height })
    await page.emulateMedia({ colorScheme: scheme })
    await page.goto(app.url)
    await expect(page.getByRole('heading', { name: 'Library' })).toBeVisible()
    const banner = page.getByRole('alert').filter({ hasText: 'cannot be read' })
    await expect(banner).toBeVisible()
    await expect(banner).toContainText(`The library file ${file} has 3 entries`)
    await expect(banner).toContainText('is a number (42), not a non-empty string')
    await expect(banner).toContainText("reason is a string ('because')")
    await expect(banner).toContainText('fingerprints is a string, not a list')
    await expect(banner).toContainText('library.json.bad-')
    // The base is found and followed; its fingerprint was in the unreadable list, so the
    // state is Unverified (never Base matches), as engine/ops/base-state.ts defines it.
    const row = page.getByRole('row').filter({ hasText: 'work.add-cow' })
    await expect(row).toContainText('Unverified')
    await expect(row).toContainText(join(folder, 'base.img'))
    // Record now stays inside the Base cell (it wraps below the tag), over no other column.
    const recordName = { name: 'Record the base of work.add-cow now' }
    const recordBox = await row.getByRole('button', recordName).boundingBox()
    const cellBox = await row
      .getByRole('cell')
      .filter({ has: page.getByRole('button', recordName) })
      .boundingBox()
    expect(recordBox && cellBox, 'Record now and its cell are shown').toBeTruthy()
    expect(recordBox!.x + recordBox!.width).toBeLessThanOrEqual(cellBox!.x + cellBox!.width)
    await expect(page.getByText('No Data')).toHaveCount(0)
    await page.screenshot(shot(`library-damaged-${width}x${height}-${scheme}`))
  }
  await page.emulateMedia({ colorScheme: 'light' })

  // One copy, byte for byte the damaged file; the library file itself is left as it was.
  const copies = (await readdir(app.dataDir)).filter((name) => name.startsWith('library.json.bad-'))
  expect(copies).toHaveLength(1)
  expect(JSON.parse(await readFile(join(app.dataDir, copies[0]!), 'utf8'))).toEqual(damaged)
  expect(JSON.parse(await readFile(file, 'utf8'))).toEqual(damaged)
})
