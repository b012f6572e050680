// A live commit cut short (issue 17): `addcow job commit --undo` against a real `addcow serve`,
// killed with SIGKILL while it copies, or cancelled. The library keeps it as an interrupted
// commit, as offline commit's: hidden while the serving process runs, then shown by
// `addcow info` and the app's Commit screen (image:get-commit-state) with its journal and what
// reached the base, and rolled back by the app (operations:rollback-commit): the base is back
// byte for byte and the record is gone.
import { readFile, realpath, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { Library } from '../../../main/engine/library'
import { processIdentity } from '../../../main/engine/processes'
import { addcow } from '../../helpers/cli'
import { pattern } from '../../helpers/images'
import { waitFor } from '../../helpers/processes'
import { requireTools, tempDir, tool } from '../../helpers/tools'
import { call, finished, testCore } from '../../unit/ipc/helpers'
import { startServe, type ServeProcess } from '../nbd/serve-process'

const MiB = 1024 * 1024
const ready = requireTools('qemu-io')
const describeLive = ready ? describe : describe.skip
const base = pattern(8 * MiB, 5)
let dir: string
let dataDir: string
let cleanup: () => Promise<void>
let served: ServeProcess | null = null

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-live-interrupted-'))
  dataDir = join(dir, '.data')
  await writeFile(join(dir, 'base.raw'), base)
  await addcow(['create', '-b', 'base.raw', '-F', 'raw', 'vm.add-cow'], { dataDir, cwd: dir })
})
afterEach(async () => {
  await served?.stop('SIGKILL')
  served = null
  await cleanup()
})

/** `addcow job ...` against the export's control socket. */
function job(...args: string[]) {
  return addcow(['job', ...args, '--control-socket', join(dir, 'vm.control')], {
    dataDir,
    cwd: dir,
  })
}

/** Serve vm.add-cow, write 4 MiB of 0x5a through it, start a slow journaled active commit. */
async function committing(): Promise<void> {
  served = await startServe(
    ['--socket', join(dir, 'nbd.sock'), '--control-socket', join(dir, 'vm.control'), 'vm.add-cow'],
    { dataDir, cwd: dir },
  )
  await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x5a 0 4M', served.uri])
  // 256 KiB/s: 16 s for the 4 MiB, so the kill and the cancel come while it copies.
  const started = await job('commit', '--undo', 'vm.undo', '--rate', '256K', '--detach')
  expect(started.code, started.stderr).toBe(0)
  await waitFor('the commit to copy', async () => {
    const status = JSON.parse((await job('status', 'commit-1', '--json')).stdout) as {
      done: number
    }
    return status.done >= MiB
  })
}

describeLive('a live commit cut short', () => {
  it('is shown once its process is gone, and the app rolls it back byte for byte', async () => {
    await committing()
    const core = testCore(dataDir)
    const overlay = join(dir, 'vm.add-cow')
    // Running: not interrupted, in the app or in info. The library keeps the serving process
    // by pid and identity (boot and start time), so a later process given its pid is not it.
    const running = await new Library(join(dataDir, 'library.json')).interruptedCommit(
      await realpath(overlay),
    )
    expect(running?.runningIn).toBe(served!.child.pid)
    expect(running?.runningProcess).toBe(processIdentity(served!.child.pid!))
    expect((await call(core, 'image:get-commit-state', { overlay })).commit).toBeNull()
    expect((await addcow(['info', overlay], { dataDir })).stdout).not.toContain(
      'interrupted commit',
    )

    await served!.stop('SIGKILL')
    served = null
    // The base holds part of the commit now.
    expect((await readFile(join(dir, 'base.raw'))).equals(base)).toBe(false)
    const { commit } = await call(core, 'image:get-commit-state', { overlay })
    expect(commit).toMatchObject({
      overlay,
      base: join(dir, 'base.raw'),
      journal: join(dir, 'vm.undo'),
      bytesTotal: 4 * MiB,
      code: 'INTERRUPTED',
    })
    expect(commit!.message).toMatch(/^The live commit in process \d+ did not end/)
    expect(commit!.bytesCommitted).toBeGreaterThanOrEqual(MiB)
    expect(commit!.ranges[0]?.[0]).toBe(0)
    expect('runningIn' in commit!).toBe(false)
    expect('runningProcess' in commit!).toBe(false)
    const info = await addcow(['info', overlay], { dataDir })
    expect(info.stdout).toContain('interrupted commit:')
    expect(info.stdout).toContain(join(dir, 'vm.undo'))

    const { job: rollback } = await call(core, 'operations:rollback-commit', {
      journal: join(dir, 'vm.undo'),
    })
    const outcome = await finished(core, rollback)
    expect(outcome.event, JSON.stringify(outcome.job.error)).toBe('jobs:done')
    expect((await readFile(join(dir, 'base.raw'))).equals(base)).toBe(true)
    expect((await call(core, 'image:get-commit-state', { overlay })).commit).toBeNull()
    // The overlay's guest view is what the guest wrote over the base.
    const view = await tool('qemu-io', [
      '-f',
      'raw',
      '-r',
      '-c',
      'read -P 0x5a 0 4M',
      join(dir, 'vm.raw'),
    ])
    expect(view).not.toContain('Pattern verification failed')
    await core.jobs.cancelAll()
  }, 120_000)

  it('cancelled, it is shown at once as cancelled, with its journal', async () => {
    await committing()
    const cancel = await job('cancel', 'commit-1')
    expect(cancel.stdout).toMatch(/^commit-1 was cancelled/)
    const core = testCore(dataDir)
    const { commit } = await call(core, 'image:get-commit-state', {
      overlay: join(dir, 'vm.add-cow'),
    })
    expect(commit).toMatchObject({ code: 'ABORTED', journal: join(dir, 'vm.undo') })
    expect(commit!.bytesCommitted).toBeGreaterThanOrEqual(MiB)
    // Run again to its end, the record goes.
    const done = await job('commit', '--undo', 'vm.undo')
    expect(done.code, done.stderr).toBe(0)
    expect(
      (await call(core, 'image:get-commit-state', { overlay: join(dir, 'vm.add-cow') })).commit,
    ).toBeNull()
    await core.jobs.cancelAll()
  }, 120_000)
})
