import * as nodeModule from 'node:module'
import { serverRelaunchArgv } from './relaunch'
import type { runCli as RunCli } from './run'

// A server command (serve, launch) needs V8 flags that only work from the start: execute the
// same command again, in this same process (its pid, streams and parent stay), with them.
// Where process.execve is missing (Node before 22.15, Windows) or fails, it runs as it is.
const relaunch = serverRelaunchArgv({
  execPath: process.execPath,
  execArgv: process.execArgv,
  argv: process.argv,
  nodeOptions: process.env.NODE_OPTIONS,
})
const execve = (process as { execve?: (file: string, args: string[], env: object) => never }).execve
if (relaunch && execve && process.platform !== 'win32') {
  try {
    execve(process.execPath, relaunch, process.env)
  } catch {
    // run without the flags
  }
}

// V8's compile cache (Node >= 22.1; NODE_DISABLE_COMPILE_CACHE=1 turns it off): later starts
// reuse the compiled code of the bundle instead of compiling it again. It must be on before the
// rest loads, so the runner is loaded after it.
;(nodeModule as { enableCompileCache?: () => unknown }).enableCompileCache?.()
// The commands: built, one CommonJS file beside this one (scripts/build-cli.mjs says why);
// from the sources, run.ts.
const COMMANDS = process.env.ADDCOW_CLI_COMMANDS ?? './run'
const { runCli } = nodeModule.createRequire(import.meta.url)(COMMANDS) as { runCli: typeof RunCli }

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
