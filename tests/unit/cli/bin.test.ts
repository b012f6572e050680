import { spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { SERVER_V8_FLAGS } from '../../../main/cli/relaunch'
import { nativeStatus } from '../../../main/engine/native/index'
import { addcow, ADDCOW_BIN, runAddcow } from '../../helpers/cli'
import { dataDir, overlayOnBase, pattern, root, useFolders } from './helpers'

// The built binary (out/cli/addcow.mjs, npm run build:cli), spawned as a user runs it: what
// only the process wrapper (main/cli/main.ts) does, and that the bundle starts at all. Every
// command's behaviour is tested in-process under commands/.

useFolders()

function spawned(args: string[]) {
  return addcow(args, { cwd: root, dataDir })
}

describe('the addcow binary', () => {
  it('prints the same help as the command table, its version, and exit 1 for an unknown command', async () => {
    const help = await spawned(['help'])
    expect(help).toEqual(await runAddcow(['help'], { cwd: root, dataDir }))
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('Usage: addcow COMMAND')
    expect(await spawned(['--version'])).toEqual({ code: 0, stdout: 'addcow 0.1.0\n', stderr: '' })
    const unknown = await spawned(['frobnicate'])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toBe(
      "addcow: unknown command 'frobnicate'. Run 'addcow help' for the list.\n",
    )
  })

  it('runs a command with its exit code: create and compare succeed, compare fails with 2', async () => {
    await pattern(join(root, 'base.raw'), 65536, 5)
    const created = await spawned(['create', '-b', 'base.raw', 'vm.add-cow'])
    expect(created.stderr).toBe('')
    expect(created.code).toBe(0)
    expect(created.stdout).toContain("Formatting 'vm.add-cow', fmt=add-cow size=65536")
    expect(await spawned(['compare', 'vm.add-cow', 'base.raw'])).toEqual({
      code: 0,
      stdout: 'Images are identical.\n',
      stderr: '',
    })
    const missing = await spawned(['compare', 'vm.add-cow', 'gone.raw'])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toContain(join(root, 'gone.raw'))
  })

  it('check --json on a missing file: a JSON error on stdout, the sentence on stderr, exit 1; the bundled man page and completion', async () => {
    const result = await spawned(['check', '--output=json', 'missing.add-cow'])
    expect(result.code).toBe(1)
    expect(JSON.parse(result.stdout)).toMatchObject({
      error: { code: 'NOT_FOUND', path: join(root, 'missing.add-cow') },
    })
    expect(result.stderr).toMatch(/^addcow check: .*missing\.add-cow.*\n$/)
    const man = await spawned(['man'])
    expect(man).toEqual(await runAddcow(['man'], { cwd: root, dataDir }))
    expect(man.stdout).toMatch(/^\.TH ADDCOW 1/)
    expect((await spawned(['completion', 'bash'])).stdout).toContain('complete -o filenames')
  })

  it('finds the native addon from the bundle, as the sources do: check scans for leaks', async () => {
    // The commands are one CommonJS file that finds the addon from its own URL; a wrong
    // path there would only show as a slower commit and no leak scan.
    await pattern(join(root, 'base.raw'), 1024 * 1024, 5)
    expect((await spawned(['create', '-b', 'base.raw', '-F', 'raw', 'vm.add-cow'])).code).toBe(0)
    const report = await spawned(['check', '--json', 'vm.add-cow'])
    expect(report.stderr).toBe('')
    expect(JSON.parse(report.stdout)['leak-scan']).toBe(
      nativeStatus().loaded ? 'done' : 'not-supported',
    )
  })

  it('serve stops on SIGTERM: it flushes the image and exits 0', async () => {
    const overlay = await overlayOnBase()
    const socket = join(root, 'vm.sock')
    const child = spawn(process.execPath, [ADDCOW_BIN, 'serve', '--socket', socket, overlay], {
      cwd: root,
      env: { ...process.env, ADDCOW_DATA_DIR: dataDir },
    })
    let stdout = ''
    let stderr = ''
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve))
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', (chunk: Buffer) => {
        stdout += chunk.toString()
        if (stdout.includes('\n')) resolve()
      })
      child.on('close', () => reject(new Error(`serve exited early: ${stderr}`)))
    })
    expect(stdout).toBe(`nbd+unix:///?socket=${socket}\n`)
    // It serves from the process that was started (same pid), run again with the server's V8
    // flags (main/cli/relaunch.ts), where process.execve exists.
    if (typeof (process as { execve?: unknown }).execve === 'function') {
      const commandLine = (await readFile(`/proc/${child.pid}/cmdline`, 'utf8')).split('\0')
      expect(commandLine.slice(1, 1 + SERVER_V8_FLAGS.length)).toEqual(SERVER_V8_FLAGS)
      expect(commandLine.slice(1 + SERVER_V8_FLAGS.length, -1)).toEqual([
        ADDCOW_BIN,
        ...['serve', '--socket', socket, overlay],
      ])
    }
    child.kill('SIGTERM')
    expect(await exited).toBe(0)
    expect(stderr).toContain('addcow serve: stopping; flushing the image.\n')
  })
})
