// CI check: no file outside main/app, the IPC binding files (main/ipc/electron-*.ts) and the
// preload imports `electron` as a value. Type-only imports are fine everywhere in main/.
import { readdir, readFile } from 'node:fs/promises'
import { join, relative } from 'node:path'

const ROOTS = ['main', 'shared', 'renderer', 'tests', 'scripts']
const ALLOWED = [/^main\/app\//, /^main\/ipc\/electron-[^/]+\.ts$/, /^main\/preload\//]
// An import clause is identifiers, braces, commas, `* as x` and whitespace: it cannot contain a
// quote, so the match never runs across statements in semicolon-free code.
const VALUE_IMPORT =
  /^\s*import\s+(?!type\s)[\w$*{},\s]*?\s*from\s*['"]electron(?:\/[^'"]*)?['"]|^\s*import\s*['"]electron['"]|\brequire\(\s*['"]electron['"]\s*\)|\bimport\(\s*['"]electron['"]\s*\)/m

/** Source without comments, so a mention in a comment is not an import. */
function stripComments(text) {
  return text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1')
}

async function* walk(folder) {
  let entries
  try {
    entries = await readdir(folder, { withFileTypes: true })
  } catch {
    return
  }
  for (const entry of entries) {
    const path = join(folder, entry.name)
    if (entry.isDirectory()) {
      if (entry.name !== 'node_modules') yield* walk(path)
    } else if (/\.(ts|mts|js|mjs|vue)$/.test(entry.name)) {
      yield path
    }
  }
}

const offenders = []
for (const root of ROOTS) {
  for await (const path of walk(root)) {
    const file = relative('.', path).split('\\').join('/')
    if (ALLOWED.some((pattern) => pattern.test(file))) continue
    if (file === 'scripts/check-electron-imports.mjs') continue
    if (VALUE_IMPORT.test(stripComments(await readFile(path, 'utf8')))) offenders.push(file)
  }
}
if (offenders.length > 0) {
  console.error(
    `These files import electron as a value outside main/app, main/ipc/electron-*.ts and the preload:\n  ${offenders.join('\n  ')}`,
  )
  process.exit(1)
}
console.log('electron imports: ok')
