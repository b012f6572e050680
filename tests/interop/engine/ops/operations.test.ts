import { spawn } from 'node:child_process'
import { copyFile, open, readFile, utimes } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { nativeStatus } from '../../../../main/engine/native/index'
import { ADDCOW_BIN, addcow } from '../../../helpers/cli'
import { requireTools, tempDir, tool, toolStatus } from '../../../helpers/tools'
import { pattern, writeGuest } from '../../../helpers/images'

const ready = requireTools('qemu-img', 'qemu-io', 'qemu-nbd')
if (process.env.CI === 'true' && !nativeStatus().loaded)
  throw new Error(`CI needs the native addon: ${nativeStatus().reason}`)
const MiB = 1024 * 1024

let dir: string
let cleanup: () => Promise<void>
let data: string
beforeAll(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-ops-interop-'))
  data = join(dir, 'data')
})
afterAll(() => cleanup())

async function run(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  return addcow(args, { cwd: dir, dataDir: data, env })
}

async function qemuIo(file: string, commands: string[], format = 'raw'): Promise<void> {
  await tool('qemu-io', ['-f', format, ...commands.flatMap((command) => ['-c', command]), file])
}

/** The writes every scenario makes: [offset, length, byte]. */
const WRITES: [number, number, number][] = [
  [0, 4096, 0x31],
  [1 * MiB + 512, 70_000, 0x32],
  [5 * MiB, 2 * MiB, 0x33],
  [8 * MiB - 4096, 4096, 0x34],
]

/** base.raw with data in places; its copy ref.raw receives the same writes through qemu-io. */
async function scene(name: string): Promise<{ base: string; overlay: string; reference: string }> {
  const base = join(dir, `${name}-base.raw`)
  const reference = join(dir, `${name}-ref.raw`)
  await tool('qemu-img', ['create', '-f', 'raw', base, '8M'])
  await qemuIo(base, ['write -P 0x11 0 2M', 'write -P 0x12 6M 1M'])
  await copyFile(base, reference)
  await qemuIo(
    reference,
    WRITES.map(([offset, length, byte]) => `write -P ${byte} ${offset} ${length}`),
  )
  const overlay = join(dir, `${name}.add-cow`)
  const created = await run(['create', '-b', `${name}-base.raw`, '-F', 'raw', overlay])
  expect(created.code, created.stderr).toBe(0)
  await writeGuest(
    overlay,
    WRITES.map(([offset, length, byte]) => [offset, Buffer.alloc(length, byte)]),
  )
  return { base, overlay, reference }
}

describe.runIf(ready)('operations against qemu-img and qemu-io', () => {
  it('commit: the base equals qemu-io applying the same writes, and qemu-img commit of a qcow2 overlay', async () => {
    const { base, overlay, reference } = await scene('commit')
    const qemuBase = join(dir, 'qemu-base.raw')
    await copyFile(join(dir, 'commit-base.raw'), qemuBase)
    await tool('qemu-img', [
      'create',
      '-f',
      'qcow2',
      '-b',
      qemuBase,
      '-F',
      'raw',
      join(dir, 'qemu.qcow2'),
    ])
    await qemuIo(
      join(dir, 'qemu.qcow2'),
      WRITES.map(([offset, length, byte]) => `write -P ${byte} ${offset} ${length}`),
      'qcow2',
    )
    await tool('qemu-img', ['commit', '-f', 'qcow2', join(dir, 'qemu.qcow2')])
    const result = await run(['commit', '-p', overlay])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toContain('Image committed.')
    expect(
      (await toolStatus('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', base, reference])).code,
    ).toBe(0)
    expect(
      (await toolStatus('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', base, qemuBase])).code,
    ).toBe(0)
    await qemuIo(base, [
      'read -P 0x33 5M 2M',
      'read -P 0x11 4096 4096',
      'read -P 0x34 8384512 4096',
    ])
    // The overlay is empty: its image file reads zeros, and check is clean.
    await qemuIo(join(dir, 'commit.raw'), ['read -P 0 0 8M'])
    const check = await run(['check', overlay])
    expect(check.code, check.stdout).toBe(0)
  })

  it('stream: the image file alone equals the guest view under qemu-img compare', async () => {
    const { overlay, reference } = await scene('stream')
    const result = await run(['stream', '-p', overlay])
    expect(result.code, result.stderr).toBe(0)
    expect(
      (
        await toolStatus('qemu-img', [
          'compare',
          '-f',
          'raw',
          '-F',
          'raw',
          join(dir, 'stream.raw'),
          reference,
        ])
      ).code,
    ).toBe(0)
    const info = JSON.parse((await run(['info', '--json', overlay])).stdout) as {
      'all-allocated': boolean
    }
    expect(info['all-allocated']).toBe(true)
  })

  it('rebase: safe mode keeps the guest view (checked after a stream with qemu-img compare)', async () => {
    const { overlay, reference } = await scene('rebase')
    await tool('qemu-img', ['create', '-f', 'raw', join(dir, 'rebase-new.raw'), '8M'])
    await qemuIo(join(dir, 'rebase-new.raw'), ['write -P 0x11 0 1M', 'write -P 0x55 3M 64k'])
    const result = await run(['rebase', '-b', 'rebase-new.raw', '-F', 'raw', overlay])
    expect(result.code, result.stderr).toBe(0)
    const info = JSON.parse((await run(['info', '--json', overlay])).stdout) as {
      'backing-filename': string
    }
    expect(info['backing-filename']).toBe('rebase-new.raw')
    expect((await run(['stream', overlay])).code).toBe(0)
    expect(
      (
        await toolStatus('qemu-img', [
          'compare',
          '-f',
          'raw',
          '-F',
          'raw',
          join(dir, 'rebase.raw'),
          reference,
        ])
      ).code,
    ).toBe(0)
  })

  it('commit --undo then --rollback restores the base byte for byte', async () => {
    const { base, overlay } = await scene('undo')
    const before = await readFile(base)
    expect((await run(['commit', '--undo', 'undo.journal', overlay])).code).toBe(0)
    expect((await readFile(base)).equals(before)).toBe(false)
    const rolled = await run(['commit', '--rollback', 'undo.journal'])
    expect(rolled.code, rolled.stderr).toBe(0)
    expect((await readFile(base)).equals(before)).toBe(true)
    const view = join(dir, 'undo-view.raw')
    expect((await run(['stream', overlay])).code).toBe(0)
    await copyFile(join(dir, 'undo.raw'), view)
    await qemuIo(
      view,
      WRITES.map(([offset, length, byte]) => `read -P ${byte} ${offset} ${length}`),
    )
  })

  it('blast radius: refuses to commit into a base that another overlay uses, unless --force', async () => {
    const { base, overlay } = await scene('shared')
    expect(
      (await run(['create', '-b', 'shared-base.raw', '-F', 'raw', join(dir, 'shared-2.add-cow')]))
        .code,
    ).toBe(0)
    const before = await readFile(base)
    const refused = await run(['commit', overlay])
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain(join(dir, 'shared-2.add-cow'))
    expect(refused.stderr).toContain('--force')
    expect((await readFile(base)).equals(before)).toBe(true)
    const forced = await run(['commit', '--force', overlay])
    expect(forced.code, forced.stderr).toBe(0)
    expect(forced.stderr).toContain('shared-2.add-cow')
  })

  it('drift: check, commit and stream refuse a base touched after create', async () => {
    const { base, overlay } = await scene('drift')
    const later = new Date(Date.now() + 60_000)
    await utimes(base, later, later)
    const check = await run(['check', '--json', overlay])
    expect(check.code).toBe(2)
    expect(JSON.parse(check.stdout)).toMatchObject({ 'base-fingerprint': 'changed' })
    const commit = await run(['commit', overlay])
    expect(commit.code).toBe(1)
    expect(commit.stderr).toContain(base)
    expect(commit.stderr).toContain('--accept-base')
    expect((await run(['stream', overlay])).code).toBe(1)
    expect((await run(['check', '--accept-base', overlay])).code).toBe(0)
    expect((await run(['stream', overlay])).code).toBe(0)
  })

  it('locks like QEMU: commit refuses a base that qemu-nbd holds', async () => {
    const { base, overlay } = await scene('locked')
    const socket = join(dir, 'nbd.sock')
    const server = spawn('qemu-nbd', ['-f', 'raw', '--socket', socket, base], { stdio: 'ignore' })
    try {
      for (let attempt = 0; attempt < 100; attempt++) {
        if ((await toolStatus('test', ['-S', socket])).code === 0) break
        await new Promise((done) => setTimeout(done, 50))
      }
      const result = await run(['commit', overlay])
      expect(result.code).toBe(1)
      expect(result.stderr).toContain(base)
      expect(result.stderr).toContain('in use by another process')
    } finally {
      server.kill('SIGTERM')
      await new Promise((done) => server.once('exit', done))
    }
    expect((await run(['commit', overlay])).code).toBe(0)
  })

  it('without the addon: check says the leak scan is not supported, commit still works', async () => {
    const { base, overlay, reference } = await scene('portable')
    const env = { ADDCOW_NO_NATIVE: '1' }
    const check = await run(['check', '--json', overlay], env)
    expect(check.code).toBe(0)
    expect(JSON.parse(check.stdout)).toMatchObject({ 'leak-scan': 'not-supported' })
    expect(JSON.parse(check.stdout)['leak-scan-note']).toContain('ADDCOW_NO_NATIVE')
    const commit = await run(['commit', overlay], env)
    expect(commit.code, commit.stderr).toBe(0)
    expect(
      (await toolStatus('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', base, reference])).code,
    ).toBe(0)
    await qemuIo(join(dir, 'portable.raw'), ['read -P 0 0 8M'])
  })

  it('check finds leaked clusters written behind the bitmap and reclaims them (exit 3, then 0)', async () => {
    const { overlay } = await scene('leak')
    const image = await open(join(dir, 'leak.raw'), 'r+')
    await image.write(pattern(10_000, 1), 0, 10_000, 3 * MiB)
    await image.close()
    const found = await run(['check', '--json', overlay])
    expect(found.code).toBe(3)
    expect(JSON.parse(found.stdout)).toMatchObject({ leaks: 1, 'leak-scan': 'done' })
    const repaired = await run(['check', '-r', 'leaks', overlay])
    expect(repaired.code, repaired.stdout).toBe(0)
    expect(repaired.stdout).toContain('Double checking the fixed image now...')
    await qemuIo(join(dir, 'leak.raw'), ['read -P 0 3M 64k'])
  })
})

/** Spawn the CLI and SIGKILL it after `delay` ms (or let it finish). */
function killAfter(
  args: string[],
  delay: number,
): Promise<{ killed: boolean; code: number | null }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, [ADDCOW_BIN, ...args], {
      cwd: dir,
      env: { ...process.env, ADDCOW_DATA_DIR: data },
      stdio: 'ignore',
    })
    const timer = setTimeout(() => child.kill('SIGKILL'), delay)
    child.on('error', fail)
    child.on('exit', (code, signal) => {
      clearTimeout(timer)
      done({ killed: signal === 'SIGKILL', code })
    })
  })
}

/** A 16 MiB overlay with 4 KiB clusters, every other cluster written: thousands of runs. */
async function bigScene(name: string): Promise<string[]> {
  const base = join(dir, `${name}-base.raw`)
  await tool('qemu-img', ['create', '-f', 'raw', base, '16M'])
  await qemuIo(base, ['write -P 0x21 0 6M', 'write -P 0x22 10M 4M'])
  const overlay = join(dir, `${name}.add-cow`)
  expect(
    (await run(['create', '-c', '4K', '-b', `${name}-base.raw`, '-F', 'raw', overlay])).code,
  ).toBe(0)
  const image = await open(join(dir, `${name}.raw`), 'r+')
  await image.write(pattern(16 * MiB, 9), 0, 16 * MiB, 0)
  await image.close()
  const meta = await open(overlay, 'r+')
  await meta.write(Buffer.alloc(512, 0x55), 0, 512, 4096)
  await meta.close()
  return [base, overlay, join(dir, `${name}.raw`)]
}

/** A kill time between the CLI's start-up (measured) and the end of a reference run. */
async function killDelay(duration: number): Promise<number> {
  startup ??= await timed(['--version'])
  return startup + Math.random() * Math.max(1, duration - startup)
}
let startup: number | null = null

async function timed(args: string[]): Promise<number> {
  const start = performance.now()
  const result = await run(args)
  expect(result.code, result.stderr).toBe(0)
  return performance.now() - start
}

const ROUNDS = 6

describe.runIf(ready)('kill -9 at random points, then run again', () => {
  it('commit: every interrupted run, finished by a rerun, ends with the same bytes', async () => {
    const files = await bigScene('kill-commit')
    const saved = await Promise.all(files.map((file) => readFile(file)))
    const restore = async (): Promise<void> => {
      for (const [index, file] of files.entries()) {
        const handle = await open(file, 'w')
        await handle.write(saved[index]!, 0, saved[index]!.length, 0)
        await handle.close()
      }
    }
    const duration = await timed(['commit', files[1]!, '--accept-base'])
    const referenceBase = join(dir, 'kill-commit-reference.raw')
    await copyFile(files[0]!, referenceBase)
    let killedMidway = 0
    for (let round = 0; round < ROUNDS; round++) {
      await restore()
      const outcome = await killAfter(
        ['commit', '--accept-base', files[1]!],
        await killDelay(duration),
      )
      if (outcome.killed) killedMidway++
      const rerun = await run(['commit', '--accept-base', files[1]!])
      expect(rerun.code, rerun.stderr).toBe(0)
      const compare = await toolStatus('qemu-img', [
        'compare',
        '-f',
        'raw',
        '-F',
        'raw',
        files[0]!,
        referenceBase,
      ])
      expect(compare.code, `round ${round}: ${compare.stdout}`).toBe(0)
      await qemuIo(files[2]!, ['read -P 0 0 16M'])
      expect((await run(['check', files[1]!])).code).toBe(0)
    }
    console.log(
      `commit: ${killedMidway} of ${ROUNDS} runs killed before they finished (reference run ${duration.toFixed(0)} ms)`,
    )
  })

  it('stream: every interrupted run, finished by a rerun, gives the same raw disk', async () => {
    const files = await bigScene('kill-stream')
    const saved = await Promise.all(files.map((file) => readFile(file)))
    const restore = async (): Promise<void> => {
      // Stream never writes the base: leave it (and its fingerprint) alone.
      for (const [index, file] of files.entries()) {
        if (index === 0) continue
        const handle = await open(file, 'w')
        await handle.write(saved[index]!, 0, saved[index]!.length, 0)
        await handle.close()
      }
    }
    const duration = await timed(['stream', files[1]!])
    const reference = join(dir, 'kill-stream-reference.raw')
    await copyFile(files[2]!, reference)
    let killedMidway = 0
    for (let round = 0; round < ROUNDS; round++) {
      await restore()
      const outcome = await killAfter(['stream', files[1]!], await killDelay(duration))
      if (outcome.killed) killedMidway++
      expect((await run(['check', files[1]!])).code).not.toBe(2)
      const rerun = await run(['stream', files[1]!])
      expect(rerun.code, rerun.stderr).toBe(0)
      const compare = await toolStatus('qemu-img', [
        'compare',
        '-f',
        'raw',
        '-F',
        'raw',
        files[2]!,
        reference,
      ])
      expect(compare.code, `round ${round}: ${compare.stdout}`).toBe(0)
      expect((await run(['check', files[1]!])).code).toBe(0)
    }
    console.log(
      `stream: ${killedMidway} of ${ROUNDS} runs killed before they finished (reference run ${duration.toFixed(0)} ms)`,
    )
  })
})
