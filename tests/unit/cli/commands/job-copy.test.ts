import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { Library } from '../../../../main/engine/library'
import { startExport, type ExportHandle } from '../../../../main/nbd/start-export'
import { expectFailure, root, run, useFolders, dataDir } from '../helpers'

// `addcow job flatten|commit` against an export in this process: what each option is refused
// with, the export's own checks (rate, layer, one job at a time), and what a finished job says.

useFolders({ overlay: true })
let handle: ExportHandle | null = null
afterEach(async () => {
  await handle?.stop()
  handle = null
})

/** Serve vm.add-cow with a control socket in the test folder. */
async function serveVm(): Promise<string> {
  const control = join(root, 'control.sock')
  handle = await startExport({
    image: join(root, 'vm.add-cow'),
    format: 'add-cow',
    listen: { socket: join(root, 'nbd.sock') },
    controlSocket: control,
    library: new Library(join(dataDir, 'library.json')),
  })
  return control
}

describe('addcow job flatten|commit', () => {
  it('refuses options that go with another action, before asking any export', async () => {
    expectFailure(
      await run(['job', 'flatten', '--layer', '1', '--control-socket', 'x']),
      1,
      'job',
      '--layer goes with addcow job commit',
    )
    expectFailure(
      await run(['job', 'flatten', '--undo', 'c.undo', '--control-socket', 'x']),
      1,
      'job',
      '--undo goes with addcow job commit',
    )
    expectFailure(
      await run(['job', 'snapshot', '--rate', '1M', '--control-socket', 'x']),
      1,
      'job',
      '--rate goes with addcow job flatten or commit',
    )
    expectFailure(
      await run(['job', 'commit', '--layer', 'top', '--control-socket', 'x']),
      1,
      'job',
      "--layer 'top' is not a layer depth",
    )
    expectFailure(
      await run(['job', 'flatten', '--rate', 'fast', '--control-socket', 'x']),
      1,
      'job',
      "The rate 'fast' is not a size",
    )
  })

  it('flattens a served overlay and says so; a second flatten has nothing to do', async () => {
    const control = await serveVm()
    await handle!.live.write(0, Buffer.alloc(4096, 9))
    const done = await run(['job', 'flatten', '--control-socket', control])
    expect(done.code, done.stderr).toBe(0)
    expect(done.stdout).toMatch(
      /^flatten-1 done: 15 cluster\(s\) copied from the chain into .*vm\.add-cow/,
    )
    expect(done.stdout).toContain('the export reads only its image file')
    expect(handle!.live.current.backing).toBeNull()
    const again = await run(['job', 'flatten', '--control-socket', control])
    expect(again.stdout).toContain('was already flattened')
    // The guest view: the write, then the base's bytes.
    const view = await handle!.live.read(0, 8192)
    expect(view.subarray(0, 4096).every((byte) => byte === 9)).toBe(true)
    expect(view.subarray(4096).every((byte) => byte === 1)).toBe(true)
  })

  it("reports the export's refusals: a rate below 4 KiB/s, a layer the chain lacks, a second job", async () => {
    const control = await serveVm()
    expectFailure(
      await run(['job', 'flatten', '--rate', '100', '--control-socket', control]),
      1,
      'job',
      "argument 'rate' is invalid",
    )
    expectFailure(
      await run(['job', 'commit', '--layer', '5', '--control-socket', control]),
      1,
      'job',
      '--layer 5 names none of them',
    )
    const slow = await run([
      'job',
      'flatten',
      '--rate',
      '4K',
      '--detach',
      '--control-socket',
      control,
    ])
    const id = /^Started (flatten-\d+); follow it with addcow job status \1\.\n$/.exec(
      slow.stdout,
    )?.[1]
    expect(id, slow.stdout + slow.stderr).toBeDefined()
    expectFailure(
      await run(['job', 'commit', '--control-socket', control]),
      1,
      'job',
      `The live job ${id} is running`,
    )
    expect((await run(['job', 'cancel', id!, '--control-socket', control])).code).toBe(0)
    await handle!.target.jobs.cancelAll()
    expect(handle!.target.jobs.get(id!).state).toBe('cancelled')
    // Cancelled with what it copied still valid: the overlay still reads its base.
    expect(handle!.live.current.backing).not.toBeNull()
  })
})
