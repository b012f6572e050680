import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

/** The built `addcow` (npm run build:cli makes it; the test command builds first). */
export const ADDCOW_BIN = fileURLToPath(new URL('../../out/cli/addcow.mjs', import.meta.url))

/**
 * Run the built `addcow` binary as a user would, with its own data folder so the user's real
 * library is never touched. Resolves with the exit code and both streams.
 */
export function addcow(
  args: string[],
  options: { cwd?: string; dataDir: string; timeout?: number; env?: Record<string, string> },
): Promise<{ code: number; stdout: string; stderr: string }> {
  if (!existsSync(ADDCOW_BIN)) throw new Error(`${ADDCOW_BIN} is missing: run npm run build:cli first`)
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [ADDCOW_BIN, ...args], {
      cwd: options.cwd,
      env: { ...process.env, ADDCOW_DATA_DIR: options.dataDir, ...options.env },
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeout ?? 60_000)
    child.on('error', fail)
    child.on('close', (code) => {
      clearTimeout(timer)
      done({ code: code ?? -1, stdout, stderr })
    })
  })
}
