import { test as base, expect, type Page } from '@playwright/test'
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

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
  /** The server's process id (a benchmark reads its CPU time). */
  pid: number
}

/**
 * Start `addcow web --port 0 --no-open` and wait for the URL it prints. `bin` is the built CLI
 * to start (a benchmark may compare another build).
 */
export async function startWebApp(
  bin = ADDCOW_BIN,
): Promise<{ app: WebApp; stop: () => Promise<void> }> {
  if (!existsSync(bin)) throw new Error(`${bin} is missing: run npm run build first`)
  const root = await mkdtemp(join(tmpdir(), 'addcow-e2e-'))
  const dataDir = join(root, 'data')
  const workDir = join(root, 'images')
  const child: ChildProcess = spawn(process.execPath, [bin, 'web', '--port', '0', '--no-open'], {
    env: { ...process.env, ADDCOW_DATA_DIR: dataDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
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
  return {
    app: {
      url,
      origin: new URL(url).origin,
      dataDir,
      workDir,
      output: () => output,
      pid: child.pid!,
    },
    stop,
  }
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

/**
 * Send one request over a WebSocket of the page's own origin (as another window of the app
 * would) and return main's IpcResult. The page must have loaded the app (it holds the cookie).
 */
export async function requestFromPage(
  page: Page,
  channel: string,
  payload: unknown,
): Promise<{ ok: boolean; value?: unknown; error?: { code: string; message: string } }> {
  return page.evaluate(
    async ({ channel, payload }) => {
      const socket = new WebSocket(`ws://${location.host}/ws`)
      await new Promise((resolve, reject) => {
        socket.onopen = resolve
        socket.onerror = reject
      })
      const result = await new Promise<{
        ok: boolean
        value?: unknown
        error?: { code: string; message: string }
      }>((resolve) => {
        socket.onmessage = (message: MessageEvent<string>) => {
          const frame = JSON.parse(message.data) as { type: string; result?: unknown }
          if (frame.type === 'response') resolve(frame.result as { ok: boolean })
        }
        socket.send(JSON.stringify({ type: 'request', id: 1, channel, payload }))
      })
      socket.close()
      return result
    },
    { channel, payload },
  )
}

/** Run the built CLI with a data folder (the web app's, to share its library and trust). */
export async function runAddcow(
  args: string[],
  dataDir: string,
): Promise<{ stdout: string; stderr: string }> {
  return promisify(execFile)(process.execPath, [ADDCOW_BIN, ...args], {
    env: { ...process.env, ADDCOW_DATA_DIR: dataDir },
  })
}

/**
 * `addcow serve --socket SOCKET IMAGE` until `stop()`: resolves once it prints its NBD URI.
 * stop() sends SIGTERM and waits for it to flush and exit.
 */
export async function serveOverNbd(
  image: string,
  socket: string,
  dataDir: string,
): Promise<{ uri: string; stop: () => Promise<void> }> {
  const child = spawn(process.execPath, [ADDCOW_BIN, 'serve', '--socket', socket, image], {
    env: { ...process.env, ADDCOW_DATA_DIR: dataDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  const uri = await new Promise<string>((resolve, reject) => {
    const onData = (chunk: Buffer): void => {
      output += chunk.toString()
      const match = /(nbd\+unix:\/\/\S+)/.exec(output)
      if (match?.[1]) resolve(match[1])
    }
    child.stdout?.on('data', onData)
    child.stderr?.on('data', onData)
    child.once('exit', (code) => reject(new Error(`addcow serve exited with ${code}: ${output}`)))
  })
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill('SIGTERM')
    await exited
  }
  return { uri, stop }
}

/**
 * Where e2e screenshots go: docs/screenshots/ (the committed user-guide pictures) when
 * UPDATE_SCREENSHOTS=1, else test-results/screenshots/, so a plain test run leaves the
 * checkout clean. Every spec takes the same pictures either way.
 */
export const SCREENSHOT_DIR =
  process.env.UPDATE_SCREENSHOTS === '1' ? 'docs/screenshots' : 'test-results/screenshots'
