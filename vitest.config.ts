import { availableParallelism } from 'node:os'
import vue from '@vitejs/plugin-vue'
import { defineConfig } from 'vitest/config'

// Two projects: fast unit tests, and interop tests against the real QEMU and NBD tools.
// Under CI=true a missing tool fails the interop suite instead of skipping it.
export default defineConfig({
  test: {
    // One worker per core, not vitest's default of one fewer: a unit file spends about half of
    // its time waiting for the thread pool (file I/O, fsync), and on 2 cores the default was a
    // single worker running all files one after another. (The interop project runs its files
    // one at a time whatever this says.)
    maxWorkers: availableParallelism(),
    projects: [
      {
        plugins: [vue()],
        test: {
          name: 'unit',
          include: ['tests/unit/**/*.test.ts'],
          environment: 'node',
          // One module graph per worker instead of one per file: most unit files import the same
          // engine, and re-importing it per file was a third of the run. The tests keep no state
          // between files (observers and cwd are restored in afterEach), so nothing leaks.
          isolate: false,
          // Temporary files in memory where the system has it: see the file for why.
          globalSetup: ['tests/setup/memory-tmpdir.ts'],
          setupFiles: ['tests/setup/byte-equality.ts', 'tests/setup/unmount-components.ts'],
          testTimeout: 30_000,
          hookTimeout: 30_000,
        },
      },
      {
        test: {
          name: 'interop',
          include: ['tests/interop/**/*.test.ts'],
          environment: 'node',
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
})
