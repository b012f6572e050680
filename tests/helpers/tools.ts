import { execFile, spawnSync } from 'node:child_process'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'

const run = promisify(execFile)

/** Whether an external tool is on PATH. */
export function hasTool(name: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${name}`], { stdio: 'ignore' }).status === 0
}

/**
 * The tools an interop suite needs. Under CI=true a missing tool throws (the suite fails);
 * elsewhere the caller gets `false` and skips with a visible reason.
 */
export function requireTools(...names: string[]): boolean {
  const missing = names.filter((name) => !hasTool(name))
  if (missing.length === 0) return true
  const message = `missing tools: ${missing.join(', ')} (apt-get install qemu-utils qemu-system-x86 libnbd-bin nbdkit)`
  if (process.env.CI === 'true') throw new Error(message)
  console.warn(`SKIP: ${message}`)
  return false
}

/** Run a tool and return its stdout; rejects with stderr in the message on failure. */
export async function tool(
  name: string,
  args: string[],
  options: { timeout?: number } = {},
): Promise<string> {
  try {
    const { stdout } = await run(name, args, {
      timeout: options.timeout ?? 60_000,
      maxBuffer: 64 * 1024 * 1024,
    })
    return stdout
  } catch (error) {
    const failure = error as { stderr?: string; stdout?: string; code?: number }
    throw new Error(
      `${name} ${args.join(' ')} failed (${failure.code}): ${failure.stderr ?? ''}${failure.stdout ?? ''}`,
    )
  }
}

/** Run a tool and return its exit code, stdout and stderr without throwing. */
export async function toolStatus(
  name: string,
  args: string[],
  options: { timeout?: number } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await run(name, args, {
      timeout: options.timeout ?? 60_000,
      maxBuffer: 64 * 1024 * 1024,
    })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const failure = error as { stderr?: string; stdout?: string; code?: number }
    return {
      code: typeof failure.code === 'number' ? failure.code : -1,
      stdout: failure.stdout ?? '',
      stderr: failure.stderr ?? '',
    }
  }
}

/** A fresh temporary folder and its cleanup. */
export async function tempDir(
  prefix = 'addcow-test-',
): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), prefix))
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) }
}

/**
 * A fresh temporary folder on a filesystem with a page cache (the system's temporary folder,
 * not the in-memory one the unit run uses: see tests/setup/memory-tmpdir.ts), for the tests
 * of the reads that copy from the page cache.
 */
export async function diskTempDir(
  prefix = 'addcow-test-',
): Promise<{ path: string; cleanup: () => Promise<void> }> {
  const path = await mkdtemp(join(process.env.ADDCOW_TEST_DISK_TMPDIR || tmpdir(), prefix))
  return { path, cleanup: () => rm(path, { recursive: true, force: true }) }
}
