import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, expect } from 'vitest'
import { parseHeader } from '../../../main/engine/formats/add-cow/header'
import { createOverlay } from '../../../main/engine/ops/create'
import { runAddcow, type AddcowResult } from '../../helpers/cli'
import { tempDir } from '../../helpers/tools'

// What the CLI's command tests share: a fresh working folder and data folder per test, and
// `run`, which runs addcow in-process there (tests/helpers/cli.ts#runAddcow).

/** The working folder of the current test (the run's cwd). */
export let root: string
/** The data folder of the current test (ADDCOW_DATA_DIR: where its library is). */
export let dataDir: string
/** What to remove after the current test; a test adds its extra folders. */
export let cleanups: (() => Promise<void>)[] = []

/**
 * Give every test of the calling file a fresh `root` and `dataDir`, removed afterwards; with
 * `overlay`, `root` holds {@link overlayOnBase}'s overlay and base from the start.
 */
export function useFolders(options: { overlay?: boolean } = {}): void {
  beforeEach(async () => {
    const work = await tempDir()
    const data = await tempDir('addcow-data-')
    root = work.path
    dataDir = data.path
    cleanups = [work.cleanup, data.cleanup]
    if (options.overlay) await overlayOnBase()
  })
  afterEach(async () => {
    for (const cleanup of cleanups) await cleanup()
  })
}

/** Run `addcow args` in `root` (or `cwd`) with the library in `dataDir` (or another). */
export function run(
  args: string[],
  options: { cwd?: string; dataDir?: string } = {},
): Promise<AddcowResult> {
  return runAddcow(args, { cwd: options.cwd ?? root, dataDir: options.dataDir ?? dataDir })
}

/** Expect a failure with `code`, one line on stderr starting "addcow COMMAND: ", nothing on stdout. */
export function expectFailure(
  result: AddcowResult,
  code: number,
  command: string,
  ...parts: string[]
): void {
  expect(result.code, result.stderr).toBe(code)
  expect(result.stdout).toBe('')
  expect(result.stderr).toMatch(new RegExp(`^addcow ${command}: [^\\n]+\\.\\n$`))
  for (const part of parts) expect(result.stderr).toContain(part)
}

/** A file of `size` bytes of `value`. */
export async function pattern(path: string, size: number, value: number): Promise<void> {
  await writeFile(path, Buffer.alloc(size, value))
}

/** The add-cow header of the file at `path`. */
export async function header(path: string) {
  return parseHeader(await readFile(path), path).header
}

/** `root`/vm.add-cow, an overlay on `root`/base.raw (1 MiB of 1s); returns the overlay's path. */
export async function overlayOnBase(): Promise<string> {
  await writeFile(join(root, 'base.raw'), Buffer.alloc(1024 * 1024, 1))
  const overlay = join(root, 'vm.add-cow')
  await createOverlay({ overlay, backing: 'base.raw', backingFormat: 'raw' })
  return overlay
}
