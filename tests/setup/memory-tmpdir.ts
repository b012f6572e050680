import { accessSync, constants, mkdtempSync, rmSync, statfsSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { TestProject } from 'vitest/node'

/**
 * Global setup of the unit project: put every temporary file of the run in memory.
 *
 * The unit tests call fsync on every flush, as the engine does, and on a shared disk each call
 * waits for the device: with /tmp on disk that waiting was about half of the run. Durability
 * itself is checked by the power-cut model (tests/helpers/power-cut.ts), never by the device,
 * so the same calls on a RAM-backed folder test the same code. The tests read the folder from
 * `os.tmpdir()` (TMPDIR), set for this project's workers only (they start after this runs; the
 * interop project, run in the same process, keeps the system's folder). Where there is no
 * writable /dev/shm (macOS, Windows), or ADDCOW_TEST_TMPDIR names another folder, nothing
 * changes but that. The folder and anything a test left in it are removed at the end.
 *
 * tmpfs has no page cache to miss (it refuses preadv2(RWF_NOWAIT), and the native read fast
 * path, readCached, reads it with a plain pread), so the tests of a read that misses the cache
 * take their folder from `diskTempDir` (tests/helpers/tools.ts), which stays on the system's
 * temporary folder, named here in ADDCOW_TEST_DISK_TMPDIR.
 */
/** Free space the in-memory folder must have, or the run stays on the system's folder. */
const MIN_FREE_BYTES = 2 * 1024 ** 3

export default function setup(project: TestProject): (() => void) | undefined {
  const parent = process.env.ADDCOW_TEST_TMPDIR || '/dev/shm'
  try {
    if (!statSync(parent).isDirectory()) return undefined
    accessSync(parent, constants.W_OK)
    // A small /dev/shm (64 MiB in a default container) would fail tests with ENOSPC: keep /tmp.
    const free = statfsSync(parent)
    if (free.bavail * free.bsize < MIN_FREE_BYTES) return undefined
  } catch {
    return undefined
  }
  const folder = mkdtempSync(join(parent, 'addcow-unit-'))
  const env = (project.config.env ??= {})
  env.ADDCOW_TEST_DISK_TMPDIR = tmpdir()
  env.TMPDIR = folder
  return () => {
    rmSync(folder, { recursive: true, force: true })
  }
}
