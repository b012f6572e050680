import { execFile, spawn } from 'node:child_process'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type { Page } from '@playwright/test'
import { ADDCOW_BIN, expect, SCREENSHOT_DIR, type WebApp } from './fixtures'

// What the operation screens' end-to-end tests share: real files made with qemu-img and
// qemu-io, writes into an overlay's guest view through `addcow serve` (NBD), and screenshots.

/** execFile as a promise: rejects when the tool exits with a non-zero status. */
export const run = promisify(execFile)

/** Where the screenshots of the user guide go. */
const SCREENSHOTS = SCREENSHOT_DIR

/**
 * Take a screenshot of the page for docs/screenshots/NAME.png. The screens scroll inside the
 * app's content pane, so the window is first made as tall as the whole screen's content (at
 * most 2000 pixels) and scrolled to the top; its size is restored afterwards.
 */
export async function screenshot(page: Page, name: string): Promise<void> {
  const viewport = page.viewportSize() ?? { width: 1280, height: 800 }
  const height = await page.evaluate(() => {
    const main = document.querySelector('main')
    let pane: HTMLElement | null = main?.parentElement ?? null
    while (pane && pane.scrollHeight <= pane.clientHeight) pane = pane.parentElement
    pane?.scrollTo(0, 0)
    return (main?.scrollHeight ?? 0) + 56 + 48
  })
  await page.setViewportSize({
    width: viewport.width,
    height: Math.min(2000, Math.max(viewport.height, height)),
  })
  // Two frames for the layout at the new size to be painted: a screenshot taken at once showed
  // a dialog with its body and its primary button not painted yet (the same DOM node, its state
  // unchanged: a frame behind, not a bug of the page).
  await page.evaluate(
    () =>
      new Promise<void>((done) => requestAnimationFrame(() => requestAnimationFrame(() => done()))),
  )
  await page.screenshot({ path: `${SCREENSHOTS}/${name}.png`, animations: 'disabled' })
  await page.setViewportSize(viewport)
}

/** A fresh folder for one test's images. */
export async function folder(webApp: WebApp, name: string): Promise<string> {
  const path = join(webApp.workDir, name)
  await mkdir(path, { recursive: true })
  return path
}

/** The guests of the launch tests: boot sectors from tests/fixtures/boot (see its README). */
export const BOOT_SECTORS = {
  /** Prints a line on COM1 and writes sector 2048 (exits through isa-debug-exit if present). */
  boot: fileURLToPath(new URL('../fixtures/boot/boot.bin', import.meta.url)),
  /** Shows the BIOS tick count and echoes typed keys on the screen and COM1. */
  keys: fileURLToPath(new URL('../fixtures/boot/keys.bin', import.meta.url)),
}

/**
 * A bootable overlay in `dir`: a 2 MiB raw base `base` holding the boot sector, and the
 * add-cow overlay `overlay` on it (made with the CLI, so it is in the library). Returns the
 * overlay's path.
 */
export async function bootOverlay(
  webApp: WebApp,
  dir: string,
  sector: keyof typeof BOOT_SECTORS,
  names: { base: string; overlay: string },
): Promise<string> {
  const disk = Buffer.alloc(2 * 1024 * 1024)
  ;(await readFile(BOOT_SECTORS[sector])).copy(disk, 0)
  await writeFile(join(dir, names.base), disk)
  const overlay = join(dir, names.overlay)
  await addcow(webApp, ['create', '-b', names.base, '-F', 'raw', overlay])
  return overlay
}

/** Run the built CLI with the server's data folder (so the library and trust are shared). */
export async function addcow(
  webApp: WebApp,
  args: string[],
): Promise<{ stdout: string; stderr: string }> {
  return run(process.execPath, [ADDCOW_BIN, ...args], {
    env: { ...process.env, ADDCOW_DATA_DIR: webApp.dataDir },
  })
}

/** Run `qemu-io` commands on a raw file (or an NBD URI). */
export async function qemuIo(target: string, commands: string[]): Promise<string> {
  const { stdout } = await run('qemu-io', [
    '-f',
    'raw',
    ...commands.flatMap((command) => ['-c', command]),
    target,
  ])
  expect(stdout).not.toMatch(/Pattern verification failed|error|failed/i)
  return stdout
}

/** A raw image made by qemu-img, with qemu-io writes of known patterns. */
export async function rawImage(path: string, size: string, writes: string[]): Promise<string> {
  await run('qemu-img', ['create', '-q', '-f', 'raw', path, size])
  if (writes.length > 0) await qemuIo(path, writes)
  return path
}

/**
 * Serve an image's guest view with `addcow serve` on a Unix socket, give its NBD URI to
 * `use`, then stop the export (SIGTERM: it flushes and closes the image) and wait for it.
 */
export async function withExport<T>(
  webApp: WebApp,
  image: string,
  use: (uri: string) => Promise<T>,
  options: { readOnly?: boolean } = {},
): Promise<T> {
  const socket = `${image}.sock`
  const child = spawn(
    process.execPath,
    [ADDCOW_BIN, 'serve', '--socket', socket, ...(options.readOnly ? ['--read-only'] : []), image],
    { env: { ...process.env, ADDCOW_DATA_DIR: webApp.dataDir }, stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let output = ''
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  const uri = await new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      output += chunk.toString()
      const match = /(nbd\+unix:\S+)/.exec(output)
      if (match?.[1]) resolve(match[1])
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    void exited.then((code) => reject(new Error(`addcow serve exited with ${code}: ${output}`)))
  })
  try {
    return await use(uri)
  } finally {
    child.kill('SIGTERM')
    expect(await exited, output).toBe(0)
  }
}

/** Write into an image's guest view through NBD with qemu-io (as a VM would). */
export async function writeGuest(webApp: WebApp, image: string, writes: string[]): Promise<void> {
  await withExport(webApp, image, (uri) => qemuIo(uri, writes))
}

/** `qemu-img compare` of two raw files or NBD URIs: resolves when their content is equal. */
export async function compareRaw(a: string, b: string): Promise<void> {
  const { stdout } = await run('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', a, b])
  expect(stdout).toContain('Images are identical')
}

/** Open the app, then one of its screens on an image (`#/check?image=...`). */
export async function openScreen(
  page: Page,
  webApp: WebApp,
  screen: string,
  image?: string,
): Promise<void> {
  await page.goto(webApp.url)
  await expect(page.getByRole('heading', { name: 'Library' })).toBeVisible()
  const query = image ? `?image=${encodeURIComponent(image)}` : ''
  await page.goto(`${webApp.origin}/#/${screen}${query}`)
}
