// Bundle the `addcow` command line into one ES module with a shebang (package.json "bin").
// Node built-ins and npm dependencies stay external; the result runs on plain Node >= 22.12.
import { build } from 'esbuild'
import { chmod, readFile, rm } from 'node:fs/promises'

const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'))
const outdir = 'out/cli'
// Stale chunks from an earlier build would pile up: start clean.
await rm(`${outdir}/chunks`, { recursive: true, force: true })
await build({
  entryPoints: { addcow: 'main/cli/main.ts' },
  outdir,
  // Code split: what only one command needs (the browser mode's IPC handlers) loads on use.
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
  outExtension: { '.js': '.mjs' },
  bundle: true,
  platform: 'node',
  format: 'esm',
  target: 'node22',
  packages: 'external',
  sourcemap: 'linked',
  banner: { js: '#!/usr/bin/env node' },
  define: { 'process.env.ADDCOW_VERSION': JSON.stringify(pkg.version) },
  logLevel: 'warning',
})
await chmod(`${outdir}/addcow.mjs`, 0o755)
