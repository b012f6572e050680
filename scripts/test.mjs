// `npm test`: build, then run every suite CI runs (vitest unit + robust + interop, Playwright e2e), and
// close with one summary line "N passed, N failed, N skipped". Exits non-zero if anything failed.
import { spawnSync } from 'node:child_process'
import { mkdirSync, readFileSync, rmSync } from 'node:fs'

const results = 'test-results'
mkdirSync(results, { recursive: true })
const npx = process.platform === 'win32' ? 'npx.cmd' : 'npx'

function run(command, args, env = {}) {
  console.log(`\n== ${command} ${args.join(' ')}`)
  const status = spawnSync(command, args, {
    stdio: 'inherit',
    env: { ...process.env, ...env },
  }).status
  return status ?? 1
}

function readJson(path) {
  try {
    return JSON.parse(readFileSync(path, 'utf8'))
  } catch {
    return null
  }
}

const only = process.argv.slice(2)
const want = (suite) => only.length === 0 || only.includes(suite)
let failedRuns = 0
const totals = { passed: 0, failed: 0, skipped: 0 }

if (!process.env.ADDCOW_TEST_NO_BUILD) {
  if (run('npm', ['run', 'build']) !== 0) {
    console.error('build failed')
    process.exit(1)
  }
}

const projects = ['unit', 'robust', 'interop'].filter(want)
if (projects.length > 0) {
  const output = `${results}/vitest.json`
  rmSync(output, { force: true })
  const status = run(npx, [
    'vitest',
    'run',
    ...projects.flatMap((project) => ['--project', project]),
    '--reporter=default',
    '--reporter=json',
    `--outputFile.json=${output}`,
  ])
  const report = readJson(output)
  if (report) {
    totals.passed += report.numPassedTests
    totals.failed += report.numFailedTests
    totals.skipped += report.numPendingTests + report.numTodoTests
  }
  if (status !== 0 || !report) failedRuns++
}

if (want('e2e')) {
  const output = `${results}/playwright.json`
  rmSync(output, { force: true })
  const status = run(npx, ['playwright', 'test', '--reporter=list,json'], {
    PLAYWRIGHT_JSON_OUTPUT_NAME: output,
  })
  const report = readJson(output)
  if (report?.stats) {
    totals.passed += report.stats.expected + report.stats.flaky
    totals.failed += report.stats.unexpected
    totals.skipped += report.stats.skipped
  }
  if (status !== 0 || !report) failedRuns++
}

console.log(`\ntests: ${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`)
process.exit(failedRuns > 0 || totals.failed > 0 ? 1 : 0)
