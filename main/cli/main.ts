import * as nodeModule from 'node:module'

// V8's compile cache (Node >= 22.1; NODE_DISABLE_COMPILE_CACHE=1 turns it off): later starts
// reuse the compiled code of the bundle instead of compiling it again. It must be on before the
// rest loads, so the runner is imported after it.
;(nodeModule as { enableCompileCache?: () => unknown }).enableCompileCache?.()
const { runCli } = await import('./run')

// The `addcow` executable: wire the process to runCli (its argv, streams and environment) and
// map the result to the exit code. SIGINT/SIGTERM abort the running command through its
// AbortSignal so it can leave its files consistent; a second signal exits at once.
const controller = new AbortController()
let signals = 0
const onSignal = (signal: NodeJS.Signals): void => {
  signals++
  if (signals > 1) process.exit(signal === 'SIGINT' ? 130 : 143)
  controller.abort()
}
process.on('SIGINT', onSignal)
process.on('SIGTERM', onSignal)

runCli(process.argv.slice(2), {
  stdout: process.stdout,
  // Created on first access (a few milliseconds of start-up): only when something is written.
  get stderr() {
    return process.stderr
  },
  get stdin() {
    return process.stdin
  },
  env: process.env,
  signal: controller.signal,
}).then(
  (code) => {
    process.exitCode = code
  },
  (error: unknown) => {
    process.stderr.write(`addcow: internal error: ${String(error)}\n`)
    process.exitCode = 1
  },
)
