// Bundle the `addcow` command line into one ES module with a shebang (package.json "bin").
// Node built-ins and npm dependencies stay external; the result runs on plain Node >= 20.19.
import { build } from 'esbuild'
import { chmod, readFile } from 'node:fs/promises'

const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'))
const outfile = 'out/cli/addcow.mjs'
await build({
  entryPoints: ['main/cli/main.ts'],
  outfile,
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node20',
  packages: 'external',
  sourcemap: 'linked',
  banner: { js: '#!/usr/bin/env node' },
  define: { 'process.env.ADDCOW_VERSION': JSON.stringify(pkg.version) },
  logLevel: 'warning',
})
await chmod(outfile, 0o755)
