// `npm run bench [NAME...]`: run every benchmark in tests/bench (each *.ts file but this one),
// or only the named ones ("read-sequential" or "read-sequential.ts"), one after another with
// tsx, printing their output as it comes. Exits non-zero if a benchmark failed or a name is
// unknown. Benchmarks print ratios against their peer; nothing here times or judges them.
import { spawnSync } from 'node:child_process'
import { readdirSync } from 'node:fs'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const folder = dirname(fileURLToPath(import.meta.url))
const available = readdirSync(folder)
  .filter((file) => file.endsWith('.ts') && file !== basename(fileURLToPath(import.meta.url)))
  .map((file) => file.slice(0, -'.ts'.length))
  .sort()

const wanted = process.argv.slice(2).map((name) => basename(name).replace(/\.ts$/, ''))
const unknown = wanted.filter((name) => !available.includes(name))
if (unknown.length > 0) {
  console.error(
    `bench: unknown benchmark(s) ${unknown.join(', ')}; available: ${available.join(', ')}`,
  )
  process.exit(2)
}

const failed: string[] = []
for (const name of wanted.length > 0 ? wanted : available) {
  console.log(`\n== bench ${name}`)
  const result = spawnSync(process.execPath, ['--import', 'tsx', join(folder, `${name}.ts`)], {
    stdio: 'inherit',
  })
  if (result.status !== 0) failed.push(`${name} (${result.status ?? result.signal})`)
}
if (failed.length > 0) {
  console.error(`\nbench: failed: ${failed.join(', ')}`)
  process.exit(1)
}
