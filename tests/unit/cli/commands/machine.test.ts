import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runAddcow } from '../../../helpers/cli'
import { tempDir } from '../../../helpers/tools'

// `addcow machine`: saved machines kept in the library file, listed, shown, copied, removed,
// and printed as the exact command line `start` runs.

let folder: { path: string; cleanup: () => Promise<void> }
let dataDir: string
let image: string

beforeAll(async () => {
  folder = await tempDir('addcow-machine-')
  dataDir = join(folder.path, 'data')
  image = join(folder.path, 'disk.raw')
  await writeFile(image, Buffer.alloc(1024 * 1024))
})
afterAll(async () => folder.cleanup())

const machine = (...args: string[]) => runAddcow(['machine', ...args], { dataDir })

describe('addcow machine', () => {
  it('saves a machine with every setting, lists, shows, copies and removes it', async () => {
    const saved = await machine(
      'save',
      '-m',
      '512',
      '--cpus',
      '1',
      '--type',
      'pc',
      '--firmware',
      'uefi',
      '--kernel',
      '/k/vmlinuz',
      '--initrd',
      '/k/initrd',
      '--append',
      'console=ttyS0',
      '--forward',
      'tcp:2222:22',
      '--display',
      'vnc',
      '--accel',
      'tcg',
      'web1',
      image,
      '--',
      '-no-reboot',
    )
    expect(saved.code, saved.stderr).toBe(0)
    const shown = JSON.parse((await machine('show', '--json', 'web1')).stdout) as Record<
      string,
      unknown
    >
    expect(shown).toEqual({
      name: 'web1',
      disk: image,
      via: 'nbd',
      memoryMiB: 512,
      cpus: 1,
      machine: 'pc',
      firmware: 'uefi',
      boot: { kind: 'kernel', kernel: '/k/vmlinuz', initrd: '/k/initrd', cmdline: 'console=ttyS0' },
      network: 'user',
      portForwards: [{ protocol: 'tcp', hostPort: 2222, guestPort: 22 }],
      display: 'vnc',
      accel: 'tcg',
      readOnly: false,
      copyOnRead: false,
      extraArgs: ['-no-reboot'],
    })
    // Kept in the shared library file.
    const library = JSON.parse(await readFile(join(dataDir, 'library.json'), 'utf8')) as {
      machines: { name: string }[]
    }
    expect(library.machines.map((entry) => entry.name)).toEqual(['web1'])

    const again = await machine('save', 'web1', image)
    expect(again.code).not.toBe(0)
    expect(again.stderr).toMatch(/already exists/)

    expect((await machine('copy', 'web1', 'web2')).code).toBe(0)
    const listed = JSON.parse((await machine('list', '--json')).stdout) as { name: string }[]
    expect(listed.map((entry) => entry.name)).toEqual(['web1', 'web2'])
    expect((await machine('rm', 'web1')).code).toBe(0)
    expect((await machine('show', 'web1')).stderr).toMatch(/no machine named 'web1'/)
    expect((await machine('list')).stdout).toContain('web2: ')
  })

  it('prints the command start runs: kernel boot without a disk boot index, UEFI, forwards', async () => {
    const printed = await machine('cmd', '--json', 'web2')
    expect(printed.code, printed.stderr).toBe(0)
    const { args } = JSON.parse(printed.stdout) as { args: string[] }
    expect(args).toContain('virtio-blk-pci,drive=disk0')
    expect(args).toContain('user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:2222-:22')
    expect(args).toContain('vnc=127.0.0.1:0')
    expect(args.join(' ')).toMatch(/-kernel \/k\/vmlinuz -initrd \/k\/initrd -append console=ttyS0/)
    expect(args.join(' ')).toMatch(/if=pflash,format=raw,unit=0,readonly=on,file=\S*OVMF/)
    expect(args.at(-1)).toBe('-no-reboot')
  })

  it('refuses bad settings, naming them', async () => {
    for (const [args, message] of [
      [['save', 'bad name', image], /name/],
      [['save', '--forward', 'tcp:22', 'x', image], /--forward 'tcp:22'/],
      [['save', '--firmware', 'coreboot', 'x', image], /--firmware 'coreboot'/],
      [['save', '--cdrom', '/a.iso', '--kernel', '/k', 'x', image], /not both/],
      [['frobnicate'], /not a machine action/],
    ] as const) {
      const result = await machine(...args)
      expect(result.code).not.toBe(0)
      expect(result.stderr).toMatch(message)
    }
  })

  it('saves copy-on-read (the command it prints serves the disk with it), refused read-only', async () => {
    const saved = await machine('save', '--copy-on-read', 'warm', image)
    expect(saved.code, saved.stderr).toBe(0)
    expect(saved.stdout).toContain('; copy-on-read')
    const printed = await machine('cmd', 'warm')
    expect(printed.stdout).toMatch(/# +addcow serve --socket \S+ --copy-on-read /)
    const refused = await machine('save', '--copy-on-read', '--read-only', 'cold', image)
    expect(refused.code).toBe(1)
    expect(refused.stderr).toContain(
      'Copy-on-read writes what the guest reads into the image; it cannot go with a read-only disk.',
    )
    expect((await machine('list')).stdout).not.toContain('cold')
    await machine('rm', 'warm')
  })
})
