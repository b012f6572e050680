// `npm start`: build what is missing or stale, then open the desktop app. When no Electron
// binary is installed (these machines install electron with ELECTRON_SKIP_BINARY_DOWNLOAD=1),
// say so and run the browser mode instead: `addcow web`, which prints the URL to open.
// Extra arguments go to Electron, or to `addcow web` (e.g. npm start -- --port 8080 --no-open).
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = fileURLToPath(new URL('..', import.meta.url))
const OUTPUTS = [
  'out/main/index.js',
  'out/preload/preload.cjs',
  'out/renderer/index.html',
  'out/cli/addcow.mjs',
]
const SOURCES = [
  'main',
  'shared',
  'renderer',
  'electron.vite.config.ts',
  'package.json',
  'scripts/build-cli.mjs',
]
const SOURCE_FILE = /\.(ts|mts|vue|html|css|svg|json|mjs|c|cc|h|gyp)$/
const SKIPPED_FOLDERS = new Set(['node_modules', 'build', 'out', 'dist'])

/** Newest modification time of the sources under `path`, in ms. */
function newest(path) {
  let info
  try {
    info = statSync(path)
  } catch {
    return 0
  }
  if (!info.isDirectory()) return SOURCE_FILE.test(path) ? info.mtimeMs : 0
  let latest = 0
  for (const entry of readdirSync(path, { withFileTypes: true })) {
    if (entry.isDirectory() && SKIPPED_FOLDERS.has(entry.name)) continue
    latest = Math.max(latest, newest(join(path, entry.name)))
  }
  return latest
}

/** Why the build must run, or null when out/ is current. */
function staleness() {
  const missing = OUTPUTS.filter((output) => !existsSync(join(ROOT, output)))
  if (missing.length > 0) return `${missing.join(', ')} missing`
  const built = Math.min(...OUTPUTS.map((output) => statSync(join(ROOT, output)).mtimeMs))
  const changed = Math.max(...SOURCES.map((source) => newest(join(ROOT, source))))
  return changed > built ? 'sources changed since the last build' : null
}

/** The Electron binary, found without loading the electron package (that would download it). */
function electronBinary() {
  const module = join(ROOT, 'node_modules', 'electron')
  const pathFile = join(module, 'path.txt')
  if (!existsSync(pathFile)) {
    return {
      path: null,
      reason: 'the Electron binary is not installed',
    }
  }
  const binary = join(
    process.env.ELECTRON_OVERRIDE_DIST_PATH ?? join(module, 'dist'),
    readFileSync(pathFile, 'utf8').trim(),
  )
  return existsSync(binary)
    ? { path: binary, reason: null }
    : { path: null, reason: `${binary} does not exist` }
}

/** Run `command`, passing signals on, and exit with its status. */
function runToTheEnd(command, args) {
  const child = spawn(command, args, { cwd: ROOT, stdio: 'inherit' })
  for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => child.kill(signal))
  child.on('exit', (code, signal) => process.exit(code ?? (signal === 'SIGINT' ? 130 : 1)))
  child.on('error', (error) => {
    console.error(`npm start: could not run ${command}: ${error.message}`)
    process.exit(1)
  })
}

const reason = staleness()
if (reason) {
  console.log(`npm start: building (${reason})…`)
  const build = spawnSync('npm', ['run', 'build'], {
    cwd: ROOT,
    stdio: 'inherit',
    shell: process.platform === 'win32',
  })
  if (build.status !== 0) {
    console.error('npm start: the build failed; see above.')
    process.exit(build.status ?? 1)
  }
}

/**
 * Electron 45 fetches its binary on first use rather than at install. Try that once (unless
 * the user opted out), so a machine with network access gets the desktop app. Returns what
 * happened, in words, for the message when no binary can be used.
 */
function fetchElectron() {
  if (process.env.ELECTRON_SKIP_BINARY_DOWNLOAD) {
    return 'no download was tried: ELECTRON_SKIP_BINARY_DOWNLOAD is set'
  }
  const installer = join(ROOT, 'node_modules', 'electron', 'install.js')
  if (!existsSync(installer)) return `no download was tried: ${installer} is missing`
  console.log('npm start: fetching the Electron binary…')
  const result = spawnSync(process.execPath, [installer], {
    cwd: ROOT,
    stdio: 'pipe',
    timeout: 300_000,
  })
  if (result.status === 0) return 'the download finished but left no binary'
  const lines = `${result.stderr ?? ''}`.trim().split('\n')
  return `the download failed: ${lines.find((line) => line.trim()) ?? 'no output'}`
}

const extra = process.argv.slice(2)
let electron = electronBinary()
if (!electron.path) {
  const fetched = fetchElectron()
  electron = electronBinary()
  if (!electron.path) electron = { path: null, reason: `${electron.reason}; ${fetched}` }
}
if (electron.path) {
  runToTheEnd(electron.path, [ROOT, ...extra])
} else {
  console.log(`npm start: no Electron binary can be used (${electron.reason}).`)
  console.log('npm start: starting the browser mode instead; open the URL printed below.')
  runToTheEnd(process.execPath, [join(ROOT, 'out', 'cli', 'addcow.mjs'), 'web', ...extra])
}
