import { existsSync } from 'node:fs'
import { mkdir, readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { COMMANDS } from '../../../main/cli/commands/index'
import { COMMAND_LOADERS } from '../../../main/cli/commands/loaders'
import { runAddcow } from '../../helpers/cli'
import { dataDir, pattern, root, run, useFolders } from './helpers'

// addcow without a command, help and --version (main/cli/run.ts), and what an in-process run
// leaves behind: nothing (working directory, environment, signal handlers, library file).

useFolders()

describe('addcow (no command), help and version', () => {
  it('prints the command list, usage of one command, and the version', async () => {
    const bare = await run([])
    expect(bare.code).toBe(1)
    expect(bare.stdout).toContain('Usage: addcow COMMAND')
    for (const name of ['create', 'info', 'map', 'compare'])
      expect(bare.stdout).toMatch(new RegExp(`\\n  ${name} +\\S`))
    const help = await run(['help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toBe(bare.stdout)
    const usage = await run(['help', 'create'])
    expect(usage.code).toBe(0)
    expect(usage.stdout).toContain(
      'Usage: addcow create [-b BASE] [-F BASE_FMT] [-i IMAGE_FILE] [-s SIZE] [-c CLUSTER_SIZE] OVERLAY',
    )
    for (const flag of ['info', 'map', 'compare']) {
      const result = await run([flag, '--help'])
      expect(result.code).toBe(0)
      expect(result.stdout).toMatch(new RegExp(`^Usage: addcow ${flag} `))
    }
    expect((await run(['create', '-h'])).stdout).toContain('--allow-any-name')
    const version = await run(['--version'])
    expect(version).toEqual({ code: 0, stdout: 'addcow 0.1.0\n', stderr: '' })
    const unknown = await run(['frobnicate'])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toBe(
      "addcow: unknown command 'frobnicate'. Run 'addcow help' for the list.\n",
    )
    expect((await run(['help', 'frobnicate'])).code).toBe(1)
  })
})

describe('command loading', () => {
  it('has a loader for every command of the table, giving that command (start-up loads one)', async () => {
    expect(Object.keys(COMMAND_LOADERS).sort()).toEqual(
      COMMANDS.map((command) => command.name).sort(),
    )
    for (const command of COMMANDS) expect(await COMMAND_LOADERS[command.name]!()).toBe(command)
  })
})

describe('in-process runs', () => {
  it('run in the given folder with the library of the given data folder, and leave the process as it was', async () => {
    const cwd = process.cwd()
    const env = { ...process.env }
    const signals = [process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')]
    await mkdir(join(root, 'vm'))
    await pattern(join(root, 'vm', 'base.raw'), 65536, 1)
    const created = await run(['create', '-b', 'base.raw', 'disk.add-cow'], {
      cwd: join(root, 'vm'),
    })
    expect(created.code, created.stderr).toBe(0)
    expect(existsSync(join(root, 'vm', 'disk.add-cow'))).toBe(true)
    const library = JSON.parse(await readFile(join(dataDir, 'library.json'), 'utf8')) as {
      images: { path: string }[]
    }
    expect(library.images.map((image) => image.path)).toEqual([join(root, 'vm', 'disk.add-cow')])
    // A failed run puts everything back too.
    expect((await run(['info', 'missing.add-cow'], { cwd: join(root, 'vm') })).code).toBe(1)
    expect(process.cwd()).toBe(cwd)
    expect(process.env).toEqual(env)
    expect([process.listenerCount('SIGINT'), process.listenerCount('SIGTERM')]).toEqual(signals)
  })

  it('refuse to overlap in two working directories, and share one', async () => {
    await mkdir(join(root, 'a'))
    await mkdir(join(root, 'b'))
    const options = { dataDir }
    const [first, second] = await Promise.all([
      runAddcow(['map', 'x'], { ...options, cwd: join(root, 'a') }),
      runAddcow(['map', 'y'], { ...options, cwd: join(root, 'a') }),
    ])
    expect(first.stderr).toContain(join(root, 'a', 'x'))
    expect(second.stderr).toContain(join(root, 'a', 'y'))
    const running = runAddcow(['map', 'x'], { ...options, cwd: join(root, 'a') })
    await expect(runAddcow(['map', 'x'], { ...options, cwd: join(root, 'b') })).rejects.toThrow(
      /must wait for it/,
    )
    expect((await running).code).toBe(1)
    expect(process.cwd()).not.toBe(join(root, 'a'))
  })
})
