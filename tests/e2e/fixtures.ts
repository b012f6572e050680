import { test as base, expect } from '@playwright/test'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

/** The built CLI (npm run build makes it, with the renderer it serves). */
export const ADDCOW_BIN = fileURLToPath(new URL('../../out/cli/addcow.mjs', import.meta.url))

/** A running `addcow web` with its own data folder and a scratch folder for images. */
export interface WebApp {
  /** The printed URL, token included. */
  url: string
  /** The server's origin, without the token. */
  origin: string
  dataDir: string
  workDir: string
  output: () => string
}

/** Start `addcow web --port 0 --no-open` and wait for the URL it prints. */
export async function startWebApp(): Promise<{ app: WebApp; stop: () => Promise<void> }> {
  if (!existsSync(ADDCOW_BIN)) throw new Error(`${ADDCOW_BIN} is missing: run npm run build first`)
  const root = await mkdtemp(join(tmpdir(), 'addcow-e2e-'))
  const dataDir = join(root, 'data')
  const workDir = join(root, 'images')
  const child: ChildProcess = spawn(
    process.execPath,
    [ADDCOW_BIN, 'web', '--port', '0', '--no-open'],
    {
      env: { ...process.env, ADDCOW_DATA_DIR: dataDir },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  )
  let output = ''
  const url = await new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      output += chunk.toString()
      const match = /(http:\/\/\S+\?token=\S+)/.exec(output)
      if (match?.[1]) resolve(match[1])
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', onData)
    child.once('exit', (code) => reject(new Error(`addcow web exited with ${code}: ${output}`)))
  })
  const stop = async (): Promise<void> => {
    if (child.exitCode === null) {
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      await exited
    }
    await rm(root, { recursive: true, force: true })
  }
  return { app: { url, origin: new URL(url).origin, dataDir, workDir, output: () => output }, stop }
}

/** Tests get one server per worker. */
export const test = base.extend<object, { webApp: WebApp }>({
  webApp: [
    // Playwright reads fixture dependencies from a destructuring pattern; this one has none.
    // eslint-disable-next-line no-empty-pattern
    async ({}, use) => {
      const { app, stop } = await startWebApp()
      await use(app)
      await stop()
    },
    { scope: 'worker' },
  ],
})

export { expect }
