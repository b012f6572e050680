import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { Writable } from 'node:stream'
import { StringDecoder } from 'node:string_decoder'
import { fileURLToPath } from 'node:url'
import { runCli } from '../../main/cli/run'

/** The built `addcow` (npm run build:cli makes it; the test command builds first). */
export const ADDCOW_BIN = fileURLToPath(new URL('../../out/cli/addcow.mjs', import.meta.url))

/** What a run of `addcow` left: its exit code and both streams. */
export interface AddcowResult {
  code: number
  stdout: string
  stderr: string
}

/** How to run `addcow`: its own data folder, so the user's real library is never touched. */
export interface AddcowOptions {
  cwd?: string
  dataDir: string
  env?: Record<string, string>
}

/**
 * Run the built `addcow` binary as a user would, in a child process. Resolves with the exit
 * code and both streams. For the binary's own behaviour (start-up, exit codes, signals) and
 * the interop suites; command behaviour is tested faster with {@link runAddcow}.
 */
export function addcow(
  args: string[],
  options: AddcowOptions & { timeout?: number },
): Promise<AddcowResult> {
  if (!existsSync(ADDCOW_BIN))
    throw new Error(`${ADDCOW_BIN} is missing: run npm run build:cli first`)
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

/** A stream that keeps what is written to it as text. */
function textSink(): { stream: Writable; text: () => string } {
  const decoder = new StringDecoder('utf8')
  let text = ''
  const stream = new Writable({
    write(chunk: Buffer, _encoding, done) {
      text += decoder.write(chunk)
      done()
    },
  })
  return { stream, text: () => text + decoder.end() }
}

/**
 * Run `addcow` in this process through the command table (main/cli/run.ts), with the same
 * argv, working directory and environment as {@link addcow} would give the binary (the
 * process's environment is read, never changed), and the same result. No terminal: progress
 * bars stay off, as they do on a pipe.
 */
export async function runAddcow(
  args: string[],
  options: AddcowOptions & { signal?: AbortSignal },
): Promise<AddcowResult> {
  const stdout = textSink()
  const stderr = textSink()
  const code = await runCli(args, {
    stdout: stdout.stream,
    stderr: stderr.stream,
    env: { ...process.env, ADDCOW_DATA_DIR: options.dataDir, ...options.env },
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  })
  return { code, stdout: stdout.text(), stderr: stderr.text() }
}
