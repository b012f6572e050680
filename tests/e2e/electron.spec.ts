import { _electron as electron } from '@playwright/test'
import { existsSync, readFileSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { AddcowBridge } from '../../shared/ipc/bridge'
import { CHANNELS } from '../../shared/ipc/channels'
import { expect, test } from './fixtures'

/** The page's global scope as the preload leaves it (the callbacks below run in the page). */
type PageScope = typeof globalThis & { addcow?: AddcowBridge }

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

/**
 * Where the electron package's binary would be, found without loading the package: loading it when the
 * binary is missing starts a download, which these machines cannot do.
 */
function electronBinary(): { path: string | null; reason: string } {
  const module = join(ROOT, 'node_modules', 'electron')
  const pathFile = join(module, 'path.txt')
  if (!existsSync(pathFile)) {
    return {
      path: null,
      reason: `no Electron binary: ${pathFile} is missing (electron was installed with ELECTRON_SKIP_BINARY_DOWNLOAD=1)`,
    }
  }
  const binary = join(
    process.env.ELECTRON_OVERRIDE_DIST_PATH ?? join(module, 'dist'),
    readFileSync(pathFile, 'utf8').trim(),
  )
  return existsSync(binary)
    ? { path: binary, reason: '' }
    : { path: null, reason: `no Electron binary at ${binary}` }
}

const binary = electronBinary()
if (!binary.path) console.warn(`SKIP tests/e2e/electron.spec.ts: ${binary.reason}`)

test.describe('the Electron shell', () => {
  test.skip(binary.path === null, binary.reason)

  test('opens one sandboxed window whose preload exposes one function per channel (and the screen port)', async () => {
    const dataDir = await mkdtemp(join(tmpdir(), 'addcow-electron-'))
    const app = await electron.launch({
      executablePath: binary.path ?? undefined,
      args: [ROOT],
      env: { ...process.env, ADDCOW_DATA_DIR: dataDir },
    })
    try {
      const page = await app.firstWindow()
      await expect(page.getByRole('heading', { name: 'Library' })).toBeVisible()
      expect(page.url()).toMatch(/^addcow:\/\/app\//)
      const surface = await page.evaluate(() => ({
        keys: Object.keys((globalThis as PageScope).addcow ?? {}).sort(),
        hasRequire: 'require' in globalThis,
        hasProcess: 'process' in globalThis,
      }))
      // Besides the channels: events, and the graphical console's MessagePort request.
      expect(surface.keys).toEqual([...Object.keys(CHANNELS), 'on', 'openVmScreen'].sort())
      expect(surface.hasRequire).toBe(false)
      expect(surface.hasProcess).toBe(false)
      const info = await page.evaluate(() => (globalThis as PageScope).addcow?.appGetInfo({}))
      expect(info).toMatchObject({
        ok: true,
        value: { shell: 'electron', nativeDialogs: true, dataDir },
      })
      const refused = await page.evaluate(() => globalThis.open('https://example.com/'))
      expect(refused).toBeNull()
      expect(app.windows()).toHaveLength(1)
      await page.screenshot({ path: 'docs/screenshots/electron-library.png' })
    } finally {
      await app.close()
      await rm(dataDir, { recursive: true, force: true })
    }
  })
})
