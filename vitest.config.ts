import { availableParallelism } from 'node:os'
import vue from '@vitejs/plugin-vue'
import { defineConfig } from 'vitest/config'
import EnvironmentSequencer from './tests/setup/environment-sequencer.ts'

/** Whether the command line asks for the test files in random order. */
const shufflesFiles = process.argv.some((arg) => arg.startsWith('--sequence.shuffle'))

// Two projects: fast unit tests, and interop tests against the real QEMU and NBD tools.
// Under CI=true a missing tool fails the interop suite instead of skipping it.
export default defineConfig({
  test: {
    // Two workers per core, not vitest's default of one fewer: a unit file spends much of its
    // time waiting (the thread pool, fsync, child processes), and while one worker waits another
    // uses the core. On 2 cores: 1 worker ran the files one after another; 2 workers took 43.4 s
    // and 4 took 40.0 s (medians of two back-to-back runs each, alternating). (The interop
    // project runs its files one at a time whatever this says.)
    maxWorkers: availableParallelism() * 2,
    // The DOM files run in one block after the node files, so a worker keeps its module graph
    // instead of being replaced at every change of environment: see the file. A sequencer set
    // here would silently win over --sequence.shuffle.files, so a shuffled run keeps vitest's.
    ...(shufflesFiles ? {} : { sequence: { sequencer: EnvironmentSequencer } }),
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
        // The robustness campaigns: seeded, long runs of one scenario each (thousands of header
        // mutants, power cuts at every file call, crashes, model-based properties). They test
        // the engine as the unit files do and need nothing outside Node, but six files took two
        // fifths of the unit run's test time; a tier of their own keeps `npm run test:unit` a
        // quick loop, as QEMU keeps check-block apart from check-unit. `npm test` (CI) runs them.
        test: {
          name: 'robust',
          include: ['tests/robust/**/*.test.ts'],
          environment: 'node',
          isolate: false,
          globalSetup: ['tests/setup/memory-tmpdir.ts'],
          setupFiles: ['tests/setup/byte-equality.ts'],
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
