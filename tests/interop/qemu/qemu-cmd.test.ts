// The command lines addcow qemu-cmd prints are run by the real QEMU, and the discovery and QMP
// client are checked against it.
import { spawn } from 'node:child_process'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { findQemuBinaries, parseQemuVersion } from '../../../main/qemu/binaries'
import { QmpClient, type QmpEvent } from '../../../main/qemu/qmp'
import { addcow } from '../../helpers/cli'
import { requireTools, tempDir, tool } from '../../helpers/tools'
import { startServe } from '../nbd/serve-process'

const FIXTURES = fileURLToPath(new URL('../../fixtures/boot/', import.meta.url))
const MIB = 1024 * 1024
const SUCCESS = 33
const MACHINE = ['--accel', 'tcg', '-m', '64', '--cpus', '1', '--network', 'none', '--headless']
const EXIT_DEVICE = ['-device', 'isa-debug-exit,iobase=0xf4,iosize=0x04', '-no-reboot']

const available = requireTools('qemu-system-x86_64', 'qemu-img')
const describeQemu = available ? describe : describe.skip

let folder: { path: string; cleanup: () => Promise<void> }
let dataDir: string

interface Printed {
  via: string
  binary: string
  args: string[]
  command: string
  explained: { args: string[]; explanation: string }[]
  prerequisite: { args: string[] } | null
}

/** Run QEMU with an argument array; resolves with its exit status and the serial output. */
function runQemu(
  binary: string,
  args: string[],
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()))
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
    child.on('error', reject)
    child.on('exit', (code) => {
      clearTimeout(timer)
      resolve({ code, stdout, stderr })
    })
  })
}

async function bootDisk(path: string, size = 4 * MIB): Promise<void> {
  const data = Buffer.alloc(size)
  ;(await readFile(join(FIXTURES, 'boot.bin'))).copy(data)
  await writeFile(path, data)
}

beforeAll(async () => {
  folder = await tempDir('addcow-qemu-cmd-')
  dataDir = join(folder.path, 'data')
})

afterAll(async () => {
  await folder?.cleanup()
})

describeQemu('addcow qemu-cmd', () => {
  it('prints an NBD command line that stock QEMU boots through addcow serve', async () => {
    await bootDisk(join(folder.path, 'base.raw'))
    const overlay = join(folder.path, 'nbd.add-cow')
    expect(
      (await addcow(['create', '-b', 'base.raw', '-F', 'raw', overlay], { dataDir })).code,
    ).toBe(0)
    const socket = join(folder.path, 'nbd.sock')
    const printed = await addcow(
      ['qemu-cmd', '--json', '--socket', socket, ...MACHINE, overlay, '--', ...EXIT_DEVICE],
      { dataDir },
    )
    expect(printed.code, printed.stderr).toBe(0)
    const command = JSON.parse(printed.stdout) as Printed
    expect(command.via).toBe('nbd')
    expect(command.prerequisite!.args).toEqual(['addcow', 'serve', '--socket', socket, overlay])
    expect(command.args).toContain(
      `driver=nbd,node-name=disk0,server.type=unix,server.path=${socket}`,
    )
    expect(command.explained.flatMap((group) => group.args)).toEqual(command.args)
    expect(command.command).toContain('# What each option does:')

    const text = await addcow(
      ['qemu-cmd', '--socket', socket, ...MACHINE, overlay, '--', ...EXIT_DEVICE],
      { dataDir },
    )
    expect(text.stdout).toBe(command.command)

    const served = await startServe(['--socket', socket, overlay], { dataDir })
    try {
      const run = await runQemu(command.binary, command.args)
      expect(run.code, run.stderr).toBe(SUCCESS)
      expect(run.stdout).toBe('addcow boot test: sector 2048 written through int 13h\r\n')
    } finally {
      expect(await served.stop()).toBe(0)
    }
  })

  it('uses the socket addcow serve picks by default, so the two line up', async () => {
    const overlay = join(folder.path, 'nbd.add-cow')
    const printed = JSON.parse(
      (await addcow(['qemu-cmd', '--json', overlay], { dataDir })).stdout,
    ) as Printed
    const served = await startServe([overlay], { dataDir })
    try {
      const socket = /socket=(.*)$/.exec(served.uri)![1]!
      expect(printed.prerequisite!.args).toEqual(['addcow', 'serve', '--socket', socket, overlay])
    } finally {
      expect(await served.stop()).toBe(0)
    }
  })

  it('runs a flattened overlay raw, and refuses --via raw while the overlay still reads its base', async () => {
    const layered = join(folder.path, 'nbd.add-cow')
    const refused = await addcow(['qemu-cmd', '--via', 'raw', layered], { dataDir })
    expect(refused.code).toBe(1)
    expect(refused.stderr).toMatch(
      /is not flattened \(\d+ of its \d+ clusters still come from its base\).*addcow stream/,
    )
    // Once streamed (flattened), its image file is a whole disk that QEMU boots directly.
    const streamed = await addcow(['stream', layered], { dataDir })
    expect(streamed.code, streamed.stderr).toBe(0)
    const direct = JSON.parse(
      (
        await addcow(
          ['qemu-cmd', '--json', '--via', 'raw', ...MACHINE, layered, '--', ...EXIT_DEVICE],
          { dataDir },
        )
      ).stdout,
    ) as Printed
    expect(direct.args).toContain('addcow-nbd.add-cow')
    const booted = await runQemu(direct.binary, direct.args)
    expect(booted.code, booted.stderr).toBe(SUCCESS)

    // An overlay without a base is ALL_ALLOCATED: its image file is the whole disk.
    const dir = join(folder.path, 'flat')
    await mkdir(dir)
    await bootDisk(join(dir, 'flat.raw'))
    const flat = join(dir, 'flat.add-cow')
    const created = await addcow(['create', '-i', 'flat.raw', flat], { dataDir })
    expect(created.code, created.stderr).toBe(0)
    const printed = await addcow(
      ['qemu-cmd', '--json', '--via', 'raw', ...MACHINE, flat, '--', ...EXIT_DEVICE],
      { dataDir },
    )
    expect(printed.code, printed.stderr).toBe(0)
    const command = JSON.parse(printed.stdout) as Printed
    expect(command.prerequisite).toBeNull()
    expect(command.args).toContain(`file=${join(dir, 'flat.raw')},format=raw,if=none,id=disk0`)
    const run = await runQemu(command.binary, command.args)
    expect(run.code, run.stderr).toBe(SUCCESS)
    expect(
      (await readFile(join(dir, 'flat.raw'))).subarray(2048 * 512, 2048 * 512 + 16).toString(),
    ).toBe('ADDCOW-BOOT-OK!\n')
  })

  it('prints the native add-cow drive, which only an add-cow-capable QEMU opens', async () => {
    const overlay = join(folder.path, 'nbd.add-cow')
    const printed = JSON.parse(
      (await addcow(['qemu-cmd', '--json', '--via', 'native', ...MACHINE, overlay], { dataDir }))
        .stdout,
    ) as Printed
    expect(printed.args).toContain(`file=${overlay},format=add-cow,if=none,id=disk0`)
    expect(printed.prerequisite).toBeNull()
    // Stock QEMU has no add-cow driver (the reason the NBD mode exists).
    const run = await runQemu(printed.binary, [...printed.args, '-S'])
    expect(run.code).not.toBe(0)
    expect(run.stderr).toMatch(/add-cow/)
  })
})

describeQemu('QEMU discovery and QMP', () => {
  it('finds qemu-system-x86_64 with the version it reports', async () => {
    const binaries = await findQemuBinaries()
    const x86 = binaries.find((binary) => binary.name === 'qemu-system-x86_64')
    expect(x86).toBeDefined()
    expect(x86!.version).toBe(parseQemuVersion(await tool(x86!.path, ['--version'])))
    expect(x86!.version).toMatch(/^\d+\.\d+/)
  })

  it('talks QMP to a real QEMU: commands, errors and events', async () => {
    const socket = join(folder.path, 'qmp.sock')
    const child = spawn(
      'qemu-system-x86_64',
      [
        '-machine',
        'none',
        '-display',
        'none',
        '-nodefaults',
        '-qmp',
        `unix:${socket},server=on,wait=off`,
      ],
      {
        stdio: 'ignore',
      },
    )
    const exited = new Promise<number | null>((resolve) =>
      child.once('exit', (code) => resolve(code)),
    )
    const client = await QmpClient.connect(socket, {
      timeoutMs: 20_000,
      alive: () => child.exitCode === null,
    })
    try {
      const version = (await client.execute('query-version')) as { qemu: { major: number } }
      expect(version.qemu.major).toBeGreaterThan(0)
      await expect(client.execute('no-such-command')).rejects.toThrow(/QMP error CommandNotFound/)
      const events: QmpEvent[] = []
      client.on('event', (event: QmpEvent) => events.push(event))
      await client.execute('quit')
      expect(await exited).toBe(0)
      await new Promise((resolve) =>
        client.connected ? client.once('close', resolve) : resolve(undefined),
      )
      expect(events.map((event) => event.event)).toContain('SHUTDOWN')
    } finally {
      client.close()
      child.kill('SIGKILL')
    }
  })
})
