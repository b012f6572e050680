// Bundle the `addcow` command line. Node built-ins and npm dependencies stay external; the
// result runs on plain Node >= 22.12. Two files:
// - out/cli/addcow.mjs (the package's bin, main/cli/main.ts): the process wrapper. It turns on
//   V8's compile cache, then loads
// - out/cli/addcow.cjs (main/cli/run.ts): every command, in one CommonJS file. A command's
//   modules still run only when argv names it (esbuild keeps each `import()` lazy in one file),
//   but Node reads one file instead of the 28 ES module chunks `addcow info` loaded before,
//   and the CommonJS loader skips the ES module loader's per-file resolve, link and built-in
//   facades: `addcow info` 73 -> 62 ms, 55 -> 40 ms of user CPU (node -e 0: 33 ms; issue 15).
import { build } from 'esbuild'
import { chmod, readFile, rm } from 'node:fs/promises'

const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8'))
const outdir = 'out/cli'
// The ES module chunks of earlier builds are not used any more: start clean.
await rm(`${outdir}/chunks`, { recursive: true, force: true })
const common = {
  outdir,
  bundle: true,
  platform: 'node',
  target: 'node22',
  packages: 'external',
  sourcemap: 'linked',
  logLevel: 'warning',
}
await build({
  ...common,
  entryPoints: { addcow: 'main/cli/main.ts' },
  outExtension: { '.js': '.mjs' },
  format: 'esm',
  banner: { js: '#!/usr/bin/env node' },
  define: { 'process.env.ADDCOW_CLI_COMMANDS': JSON.stringify('./addcow.cjs') },
})
await build({
  ...common,
  entryPoints: { addcow: 'main/cli/run.ts' },
  outExtension: { '.js': '.cjs' },
  format: 'cjs',
  // The modules that find files beside themselves (the native addon, the renderer) get this
  // file's URL, as they get their own from import.meta.url when run from the sources.
  banner: { js: 'const __addcowModuleUrl = require("node:url").pathToFileURL(__filename).href;' },
  define: {
    'process.env.ADDCOW_VERSION': JSON.stringify(pkg.version),
    'import.meta.url': '__addcowModuleUrl',
  },
})
await chmod(`${outdir}/addcow.mjs`, 0o755)
