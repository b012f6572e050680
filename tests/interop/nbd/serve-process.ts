// Runs `addcow serve` as a user would: a separate process that prints its NBD URI and serves
// until a signal stops it.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { ADDCOW_BIN } from '../../helpers/cli'

export interface ServeProcess {
  uri: string
  child: ChildProcess
  stderr(): string
  /** Send a signal and wait for the exit code. */
  stop(signal?: NodeJS.Signals): Promise<number | null>
}

export function startServe(
  args: string[],
  options: {
    dataDir: string
    cwd?: string
    env?: Record<string, string>
    /**
     * The largest file offset the process may write (RLIMIT_FSIZE, in 512-byte blocks as
     * `ulimit -f` takes it): writes past it fail with EFBIG (SIGXFSZ ignored), a disk that
     * cannot grow without a loop device or root.
     */
    fileSizeBlocks?: number
  },
): Promise<ServeProcess> {
  if (!existsSync(ADDCOW_BIN))
    throw new Error(`${ADDCOW_BIN} is missing: run npm run build:cli first`)
  const command = [process.execPath, ADDCOW_BIN, 'serve', ...args]
  const [file, ...argv] =
    options.fileSizeBlocks === undefined
      ? command
      : [
          'sh',
          '-c',
          `trap '' XFSZ; ulimit -f ${options.fileSizeBlocks}; exec "$@"`,
          'sh',
          ...command,
        ]
  const child = spawn(file!, argv, {
    cwd: options.cwd,
    env: { ...process.env, ADDCOW_DATA_DIR: options.dataDir, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let stdout = ''
  let stderr = ''
  child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => resolve(code)),
  )
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL')
      reject(new Error(`addcow serve printed no URI within 30 s: ${stderr}`))
    }, 30_000)
    child.stdout!.on('data', (chunk: Buffer) => {
      stdout += chunk.toString()
      const end = stdout.indexOf('\n')
      if (end < 0) return
      clearTimeout(timer)
      resolve({
        uri: stdout.slice(0, end),
        child,
        stderr: () => stderr,
        async stop(signal: NodeJS.Signals = 'SIGTERM') {
          if (child.exitCode === null) child.kill(signal)
          return exited
        },
      })
    })
    void exited.then((code) => {
      clearTimeout(timer)
      reject(new Error(`addcow serve exited with ${code} before printing a URI: ${stderr}`))
    })
  })
}
