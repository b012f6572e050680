// `addcow qemu-cmd --script` and `addcow machine cmd --script`: the POSIX sh script, run by
// dash as a user would run it, starts the export, boots the test boot sector through it under
// TCG with exactly the argv qemu-cmd prints (read from /proc/PID/cmdline), and leaves no export
// behind once QEMU exits.
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync } from 'node:fs'
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { openImage } from '../../../main/engine/open'
import { vmRunFolder } from '../../../main/qemu/launcher'
import { QmpClient } from '../../../main/qemu/qmp'
import { ADDCOW_BIN, addcow } from '../../helpers/cli'
import { childrenOf, waitFor } from '../../helpers/processes'
import { requireTools, tempDir } from '../../helpers/tools'

const FIXTURES = fileURLToPath(new URL('../../fixtures/boot/', import.meta.url))
const MIB = 1024 * 1024
const MACHINE = ['--accel', 'tcg', '-m', '64', '--cpus', '1', '--network', 'none', '--headless']
const BOOTED = 'addcow boot test: sector 2048 written through int 13h'

const available = requireTools('qemu-system-x86_64', 'sh')
const describeQemu = available ? describe : describe.skip

let folder: { path: string; cleanup: () => Promise<void> }
let dataDir: string
let binFolder: string

beforeAll(async () => {
  folder = await tempDir('addcow-script-')
  dataDir = join(folder.path, 'data')
  // `addcow` on PATH, as the script expects it.
  binFolder = join(folder.path, 'bin')
  await mkdir(binFolder)
  await writeFile(
    join(binFolder, 'addcow'),
    `#!/bin/sh\nexec '${process.execPath}' '${ADDCOW_BIN}' "$@"\n`,
  )
  await chmod(join(binFolder, 'addcow'), 0o755)
})
afterAll(async () => folder?.cleanup())

async function bootOverlay(name: string): Promise<string> {
  const base = Buffer.alloc(4 * MIB)
  ;(await readFile(join(FIXTURES, 'boot.bin'))).copy(base)
  await writeFile(join(folder.path, `${name}-base.raw`), base)
  const overlay = join(folder.path, `${name}.add-cow`)
  const created = await addcow(['create', '-b', `${name}-base.raw`, '-F', 'raw', overlay], {
    dataDir,
  })
  expect(created.code, created.stderr).toBe(0)
  return overlay
}

interface ScriptRun {
  child: ChildProcess
  output: () => string
  exited: Promise<number | null>
}

function runScript(path: string): ScriptRun {
  // Its own process group, as a terminal gives a command: Ctrl-C signals the whole group.
  const child = spawn('sh', [path], {
    detached: true,
    env: { ...process.env, PATH: `${binFolder}:${process.env.PATH}`, ADDCOW_DATA_DIR: dataDir },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout!.on('data', (chunk: Buffer) => (output += chunk.toString()))
  child.stderr!.on('data', (chunk: Buffer) => (output += chunk.toString()))
  const exited = new Promise<number | null>((resolve) => child.once('exit', resolve))
  return { child, output: () => output, exited }
}

/**
 * Run a script that boots the boot sector (no exit device: it halts after writing), and check
 * QEMU's argv and the export while it runs; then quit QEMU through `qmpSocket`.
 */
async function bootWithScript(
  script: string,
  expectedArgv: string[],
  qmpSocket: string,
): Promise<{ status: number | null; servePid: number; output: string }> {
  const path = join(folder.path, `run-${Date.now()}.sh`)
  await writeFile(path, script)
  const run = runScript(path)
  try {
    await waitFor('the boot sector', async () => run.output().includes(BOOTED))
    const children = await childrenOf(run.child.pid!)
    const qemu = children.find((child) => child.name.startsWith('qemu-system'))
    const serve = children.find((child) => child.name !== qemu?.name)
    expect(qemu, JSON.stringify(children)).toBeDefined()
    expect(serve, JSON.stringify(children)).toBeDefined()
    expect(qemu!.argv).toEqual(expectedArgv)
    const qmp = await QmpClient.connect(qmpSocket, { timeoutMs: 10_000 })
    await qmp.execute('quit').catch(() => undefined)
    qmp.close()
    const status = await run.exited
    return { status, servePid: serve!.pid, output: run.output() }
  } finally {
    if (run.child.exitCode === null) run.child.kill('SIGTERM')
  }
}

async function sectorOf(overlay: string): Promise<string> {
  const disk = await openImage(overlay, { readOnly: true })
  try {
    return (await disk.read(2048 * 512, 16)).toString()
  } finally {
    await disk.close()
  }
}

describeQemu('the exported shell script', () => {
  it('qemu-cmd --script starts the export, runs the printed argv, and stops the export after QEMU', async () => {
    const overlay = await bootOverlay('script')
    const qmpSocket = join(folder.path, 'script-qmp.sock')
    const extra = ['-qmp', `unix:${qmpSocket},server=on,wait=off`]
    const printed = await addcow(['qemu-cmd', '--json', ...MACHINE, overlay, '--', ...extra], {
      dataDir,
    })
    expect(printed.code, printed.stderr).toBe(0)
    const command = JSON.parse(printed.stdout) as {
      binary: string
      args: string[]
      prerequisite: { args: string[] }
    }
    const socket = command.prerequisite.args[3]!
    const script = await addcow(['qemu-cmd', '--script', ...MACHINE, overlay, '--', ...extra], {
      dataDir,
    })
    expect(script.code, script.stderr).toBe(0)
    expect(script.stdout.startsWith('#!/bin/sh\n')).toBe(true)

    const run = await bootWithScript(script.stdout, [command.binary, ...command.args], qmpSocket)
    expect(run.status, run.output).toBe(0)
    // The export is gone: its process, its socket, its lock (the overlay opens for writing).
    expect(existsSync(`/proc/${run.servePid}`)).toBe(false)
    expect(existsSync(socket)).toBe(false)
    expect(run.output).toContain('addcow serve: stopping; flushing the image.')
    const writable = await openImage(overlay, {})
    await writable.close()
    expect(await sectorOf(overlay)).toBe('ADDCOW-BOOT-OK!\n')
  })

  it('machine cmd --script runs the saved machine in its run folder, and removes the folder after', async () => {
    const overlay = await bootOverlay('machine-script')
    const saved = await addcow(
      [
        'machine',
        'save',
        ...MACHINE.filter((arg) => arg !== '--headless'),
        '--display',
        'none',
        'scripted',
        overlay,
      ],
      { dataDir },
    )
    expect(saved.code, saved.stderr).toBe(0)
    const printed = await addcow(['machine', 'cmd', '--json', 'scripted'], { dataDir })
    expect(printed.code, printed.stderr).toBe(0)
    const command = JSON.parse(printed.stdout) as { binary: string; args: string[] }
    const script = await addcow(['machine', 'cmd', '--script', 'scripted'], { dataDir })
    expect(script.code, script.stderr).toBe(0)
    const runFolder = vmRunFolder(overlay)
    expect(script.stdout).toContain(`run_folder=${runFolder}`)

    const run = await bootWithScript(
      script.stdout,
      [command.binary, ...command.args],
      join(runFolder, 'qmp.sock'),
    )
    expect(run.status, run.output).toBe(0)
    expect(existsSync(`/proc/${run.servePid}`)).toBe(false)
    expect(existsSync(runFolder)).toBe(false)
    expect(await sectorOf(overlay)).toBe('ADDCOW-BOOT-OK!\n')
  })

  it('stops the export when the script is interrupted, and fails plainly when the export cannot start', async () => {
    const overlay = await bootOverlay('interrupted')
    const script = await addcow(['qemu-cmd', '--script', ...MACHINE, overlay], { dataDir })
    expect(script.code, script.stderr).toBe(0)
    const interrupted = join(folder.path, 'interrupted.sh')
    await writeFile(interrupted, script.stdout)
    const running = runScript(interrupted)
    await waitFor('the boot sector', async () => running.output().includes(BOOTED))
    const serve = (await childrenOf(running.child.pid!)).find(
      (child) => !child.name.startsWith('qemu-system'),
    )
    expect(serve).toBeDefined()
    // Ctrl-C: SIGINT to the script's process group (QEMU and the shell; the export, started
    // in the background, ignores it as POSIX says): the trap stops the export.
    process.kill(-running.child.pid!, 'SIGINT')
    expect(await running.exited).toBe(130)
    expect(existsSync(`/proc/${serve!.pid}`)).toBe(false)
    expect(running.output()).toContain('addcow serve: stopping; flushing the image.')
    expect(await sectorOf(overlay)).toBe('ADDCOW-BOOT-OK!\n')

    const missing = join(folder.path, 'missing.add-cow')
    const path = join(folder.path, 'refused.sh')
    // The same script for an image that is gone: serve fails, QEMU never starts.
    await writeFile(path, script.stdout.replaceAll(overlay, missing))
    const run = runScript(path)
    expect(await run.exited).toBe(1)
    expect(run.output()).toMatch(/addcow serve did not start listening/)
    expect(run.output()).not.toContain(BOOTED)
  })
})
