import { spawn } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { ADDCOW_BIN, addcow, type AddcowResult } from '../../helpers/cli'
import { pattern } from '../../helpers/images'
import { waitFor } from '../../helpers/processes'
import { tempDir, tool } from '../../helpers/tools'
import { startServe, type ServeProcess } from '../nbd/serve-process'

// `addcow job` against a running `addcow serve` (the built binary, as a user runs both): the
// control socket it prints, status, snapshot, list, cancel, and the messages of each mistake.

const MiB = 1024 * 1024
let dir: string
let dataDir: string
let cleanup: () => Promise<void>
let served: ServeProcess | null = null

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-job-'))
  dataDir = join(dir, '.data')
  await writeFile(join(dir, 'base.raw'), pattern(4 * MiB, 3))
  await addcow(['create', '-b', 'base.raw', '-F', 'raw', 'vm.add-cow'], { dataDir, cwd: dir })
})
afterEach(async () => {
  await served?.stop()
  served = null
  await cleanup()
})

/** `addcow job ...` in the test folder, with XDG_RUNTIME_DIR pointing into it. */
function job(...args: string[]) {
  return addcow(['job', ...args], { dataDir, cwd: dir, env: { XDG_RUNTIME_DIR: dir } })
}

/**
 * `addcow job ...` as a child process that `interrupt` sends SIGINT (Ctrl-C in a terminal);
 * `result` settles with its exit code and streams.
 */
function jobInterruptible(...args: string[]): {
  interrupt: () => void
  result: Promise<AddcowResult>
} {
  const child = spawn(process.execPath, [ADDCOW_BIN, 'job', ...args], {
    cwd: dir,
    env: { ...process.env, ADDCOW_DATA_DIR: dataDir, XDG_RUNTIME_DIR: dir },
  })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  const result = new Promise<AddcowResult>((done) =>
    child.on('close', (code) => done({ code: code ?? -1, stdout, stderr })),
  )
  return { interrupt: () => void child.kill('SIGINT'), result }
}

/** The state of the live job `id`, as `job status --json` prints it. */
async function jobState(control: string, id: string): Promise<string> {
  const status = await job('status', id, '--json', '--control-socket', control)
  return status.code === 0 ? (JSON.parse(status.stdout) as { state: string }).state : 'unknown'
}

describe('addcow job', () => {
  it('snapshots a running serve through the control socket it printed', async () => {
    const control = join(dir, 'vm.control')
    served = await startServe(
      ['--socket', join(dir, 'nbd.sock'), '--control-socket', control, 'vm.add-cow'],
      { dataDir, cwd: dir },
    )
    await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 64k', served.uri])
    expect(served.stderr()).toContain(`live commands on ${control}`)

    const status = await job('status', '--control-socket', control)
    expect(status.code, status.stderr).toBe(0)
    expect(status.stdout).toContain(
      `Serving ${join(dir, 'vm.add-cow')} (add-cow, 4 MiB, read-write)`,
    )
    expect(status.stdout).toContain(`base ${join(dir, 'base.raw')}`)

    const snapshot = await job('snapshot', '--control-socket', control, '--name', 'after.add-cow')
    expect(snapshot.code, snapshot.stderr).toBe(0)
    expect(snapshot.stdout).toContain(`The export now writes to ${join(dir, 'after.add-cow')}.`)
    expect(snapshot.stdout).toContain(`${join(dir, 'vm.add-cow')} is frozen`)

    // The client goes on through the same URI; its write lands in the new top.
    await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0xa5 32k 4k', served.uri])
    const read = await tool('qemu-io', [
      '-f',
      'raw',
      '-c',
      'read -P 0x5a 0 32k',
      '-c',
      'read -P 0xa5 32k 4k',
      served.uri,
    ])
    expect(read).not.toContain('Pattern verification failed')

    const json = JSON.parse((await job('status', '--json', '--control-socket', control)).stdout)
    expect(json.chain).toEqual([
      join(dir, 'after.add-cow'),
      join(dir, 'vm.add-cow'),
      join(dir, 'base.raw'),
    ])
    expect(json.swaps).toBe(1)
    const list = await job('list', '--control-socket', control)
    expect(list.stdout).toBe('snapshot-1  done\n')
    const one = JSON.parse(
      (await job('status', 'snapshot-1', '--json', '--control-socket', control)).stdout,
    )
    expect(one.result.top).toBe(join(dir, 'after.add-cow'))

    expect(await served.stop()).toBe(0)
    expect(served.stderr()).toContain(`serve ${join(dir, 'after.add-cow')} to go on from here`)
    served = null
    // The library knows the new top and the frozen layer's fingerprint: serving the frozen
    // layer again and writing to it makes the new top's drift guard refuse.
    const library = JSON.parse(
      (await addcow(['info', '--json', 'after.add-cow'], { dataDir, cwd: dir })).stdout,
    )
    expect(library.filename).toBe(join(dir, 'after.add-cow'))
    const again = await startServe(['--socket', join(dir, 'again.sock'), 'vm.add-cow'], {
      dataDir,
      cwd: dir,
    })
    await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 1M 4k', again.uri])
    expect(await again.stop()).toBe(0)
    const refused = await addcow(['serve', '--socket', join(dir, 'x.sock'), 'after.add-cow'], {
      dataDir,
      cwd: dir,
    })
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(/vm\.add-cow.*changed/)
    // Offline, the new top holds both writes over the frozen layer.
    const after = await tool('qemu-io', [
      '-f',
      'raw',
      '-r',
      '-c',
      'read -P 0xa5 32k 4k',
      join(dir, 'after.raw'),
    ])
    expect(after).not.toContain('Pattern verification failed')
  }, 60_000)

  it('reports a cancelled job as cancelled: job cancel, Ctrl-C of a waiting job, status, list, JSON', async () => {
    const control = join(dir, 'vm.control')
    served = await startServe(
      ['--socket', join(dir, 'nbd.sock'), '--control-socket', control, 'vm.add-cow'],
      { dataDir, cwd: dir },
    )
    // 64 KiB/s: a minute for the 4 MiB disk, so each cancel comes while the job copies.
    const started = await job('flatten', '--rate', '64K', '--detach', '--control-socket', control)
    expect(started.stdout).toContain('Started flatten-1')
    const cancel = await job('cancel', 'flatten-1', '--control-socket', control)
    expect(cancel.code, cancel.stderr).toBe(0)
    expect(cancel.stdout).toMatch(
      /^flatten-1 was cancelled( after [\d.]+ \w+ of 4 MiB)?: what it copied stays in the overlay/,
    )
    const one = JSON.parse(
      (await job('status', 'flatten-1', '--json', '--control-socket', control)).stdout,
    )
    expect(one.state).toBe('cancelled')
    expect(one.error.code).toBe('ABORTED')
    expect((await job('status', 'flatten-1', '--control-socket', control)).stdout).toMatch(
      /^flatten-1 {2}cancelled\b/,
    )
    const again = await job('cancel', 'flatten-1', '--control-socket', control)
    expect(again.stdout).toBe('flatten-1 is not running (cancelled).\n')

    // Ctrl-C of a waiting `job flatten -p --json`: the export cancels the job; the CLI says so
    // and prints the job record, cancelled.
    const waiting = jobInterruptible(
      'flatten',
      '--rate',
      '64K',
      '-p',
      '--json',
      '--control-socket',
      control,
    )
    await waitFor(
      'flatten-2 to run',
      async () => (await jobState(control, 'flatten-2')) === 'running',
    )
    waiting.interrupt()
    const interrupted = await waiting.result
    expect(interrupted.code).toBe(1)
    expect(interrupted.stderr).toMatch(
      /addcow job: flatten-2 was cancelled( after .+)?: what it copied stays/,
    )
    expect(interrupted.stderr).not.toMatch(/failed/i)
    const record = JSON.parse(interrupted.stdout)
    expect(record).toMatchObject({
      id: 'flatten-2',
      state: 'cancelled',
      error: { code: 'ABORTED' },
    })

    // A commit cancelled from another shell while `job commit` waits: both say cancelled.
    await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 2M', served.uri])
    const committing = jobInterruptible('commit', '--rate', '64K', '--control-socket', control)
    await waitFor(
      'commit-3 to run',
      async () => (await jobState(control, 'commit-3')) === 'running',
    )
    const stopped = await job('cancel', 'commit-3', '--control-socket', control)
    expect(stopped.stdout).toMatch(
      /^commit-3 was cancelled( after .+)?: the guest's view is unchanged/,
    )
    const follower = await committing.result
    expect(follower.code).toBe(1)
    expect(follower.stderr).toMatch(/^addcow job: commit-3 was cancelled/)
    const list = await job('list', '--control-socket', control)
    expect(list.stdout).toMatch(
      /^flatten-1 {2}cancelled\b.*\nflatten-2 {2}cancelled\b.*\ncommit-3 {2}cancelled\b/,
    )
    expect(list.stdout).not.toContain('failed')
    // The guest's view is what it wrote over the base, whatever the cancels copied.
    const read = await tool('qemu-io', ['-f', 'raw', '-c', 'read -P 0x5a 0 2M', served.uri])
    expect(read).not.toContain('Pattern verification failed')
  }, 120_000)

  it('finds the default control socket of an image with --image', async () => {
    served = await startServe(['--socket', join(dir, 'nbd.sock'), 'vm.add-cow'], {
      dataDir,
      cwd: dir,
      env: { XDG_RUNTIME_DIR: dir },
    })
    const status = await job('status', '--image', 'vm.add-cow', '--json')
    expect(status.code, status.stderr).toBe(0)
    expect(JSON.parse(status.stdout).top).toBe(join(dir, 'vm.add-cow'))
  }, 60_000)

  it('says what is wrong: no export, no socket named, an unknown job or action', async () => {
    const none = await job('status', '--control-socket', join(dir, 'none.control'))
    expect(none.code).toBe(1)
    expect(none.stderr).toContain(
      `No running export listens on the control socket ${join(dir, 'none.control')}`,
    )
    const unnamed = await job('list')
    expect(unnamed.stderr).toContain(
      '--control-socket PATH (printed by addcow serve) or --image IMAGE',
    )
    const control = join(dir, 'vm.control')
    served = await startServe(
      ['--socket', join(dir, 'nbd.sock'), '--control-socket', control, 'vm.add-cow'],
      { dataDir, cwd: dir },
    )
    const unknown = await job('cancel', 'commit-3', '--control-socket', control)
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toContain("There is no live job 'commit-3'.")
    const action = await job('freeze', '--control-socket', control)
    expect(action.stderr).toContain(
      "addcow job takes status, list, snapshot, flatten, commit or cancel, not 'freeze'.",
    )
    const taken = await job('snapshot', '--name', 'base.raw', '--control-socket', control)
    expect(taken.stderr).toContain(`${join(dir, 'base.raw')} already exists`)
  }, 60_000)
})
