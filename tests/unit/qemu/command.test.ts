import { describe, expect, it } from 'vitest'
import {
  buildQemuCommand,
  defaultMachine,
  qemuOptionValue,
  shellQuote,
} from '../../../main/qemu/command'
import { parseMemory, qemuOptionsFrom, splitExtraArgs } from '../../../main/cli/options'

describe('buildQemuCommand', () => {
  it('boots stock QEMU from the NBD export: an argument array, explained, and a serve prerequisite', () => {
    const command = buildQemuCommand({
      arch: 'x86_64',
      accel: 'kvm',
      disk: {
        via: 'nbd',
        socket: '/run/addcow/vm.sock',
        exportName: '',
        image: '/images/vm.add-cow',
      },
    })
    expect(command.binary).toBe('qemu-system-x86_64')
    expect(command.args).toEqual([
      '-name',
      'addcow-vm.add-cow',
      '-machine',
      'q35',
      '-accel',
      'kvm',
      '-cpu',
      'host',
      '-m',
      '2048',
      '-smp',
      '2',
      '-blockdev',
      'driver=nbd,node-name=disk0,server.type=unix,server.path=/run/addcow/vm.sock',
      '-device',
      'virtio-blk-pci,drive=disk0,bootindex=0',
      '-nic',
      'user,model=virtio-net-pci',
      '-chardev',
      'stdio,id=console0,signal=off',
      '-serial',
      'chardev:console0',
    ])
    expect(command.explained.flatMap((group) => group.args)).toEqual(command.args)
    for (const group of command.explained) expect(group.explanation.length).toBeGreaterThan(5)
    expect(command.prerequisite?.args).toEqual([
      'addcow',
      'serve',
      '--socket',
      '/run/addcow/vm.sock',
      '/images/vm.add-cow',
    ])
    expect(command.rendering).toContain(
      '#   addcow serve --socket /run/addcow/vm.sock /images/vm.add-cow',
    )
    expect(command.rendering).toContain('qemu-system-x86_64 \\\n  -name addcow-vm.add-cow \\\n')
    expect(command.rendering).toContain('  -serial chardev:console0\n#\n')
  })

  it('uses TCG without -cpu host, and takes every machine option', () => {
    const command = buildQemuCommand({
      arch: 'x86_64',
      accel: 'tcg',
      binary: '/opt/qemu/bin/qemu-system-x86_64',
      machine: 'pc',
      memoryMiB: 64,
      cpus: 1,
      display: 'none',
      network: 'none',
      diskInterface: 'ide',
      readOnly: true,
      serial: { file: '/tmp/serial.log' },
      qmpSocket: '/tmp/q,mp.sock',
      name: 'test',
      disk: {
        via: 'nbd',
        host: '127.0.0.1',
        port: 10809,
        exportName: 'disk',
        tls: { pskFolder: '/etc/psk', username: 'alice' },
      },
      extraArgs: ['-no-reboot', '-device', 'isa-debug-exit,iobase=0xf4'],
    })
    expect(command.binary).toBe('/opt/qemu/bin/qemu-system-x86_64')
    expect(command.args).not.toContain('-cpu')
    expect(command.args).toEqual([
      '-name',
      'test',
      '-machine',
      'pc',
      '-accel',
      'tcg',
      '-m',
      '64',
      '-smp',
      '1',
      '-object',
      'tls-creds-psk,id=tls0,endpoint=client,dir=/etc/psk,username=alice',
      '-blockdev',
      'driver=nbd,node-name=disk0,server.type=inet,server.host=127.0.0.1,server.port=10809,export=disk,tls-creds=tls0,read-only=on',
      '-device',
      'ide-hd,drive=disk0,bootindex=0',
      '-nic',
      'none',
      '-display',
      'none',
      '-serial',
      'file:/tmp/serial.log',
      '-qmp',
      'unix:/tmp/q,,mp.sock,server=on,wait=off',
      '-no-reboot',
      '-device',
      'isa-debug-exit,iobase=0xf4',
    ])
    expect(command.rendering).toContain('  -no-reboot \\\n  -device isa-debug-exit,iobase=0xf4\n')
  })

  it('runs add-cow natively or the flattened raw file directly, with no prerequisite', () => {
    const native = buildQemuCommand({
      arch: 'x86_64',
      disk: { via: 'native', path: '/img/a,b.add-cow' },
    })
    expect(native.args).toContain('file=/img/a,,b.add-cow,format=add-cow,if=none,id=disk0')
    expect(native.prerequisite).toBeNull()
    const raw = buildQemuCommand({ arch: 'x86_64', disk: { via: 'raw', path: '/img/vm.raw' } })
    expect(raw.args).toContain('file=/img/vm.raw,format=raw,if=none,id=disk0')
    expect(raw.rendering).toMatch(/^# Boot the flattened overlay's raw image file directly\./)
  })

  it('refuses impossible sizes', () => {
    const disk = { via: 'raw' as const, path: '/x.raw' }
    expect(() => buildQemuCommand({ disk, memoryMiB: 0 })).toThrow(/memory size/)
    expect(() => buildQemuCommand({ disk, cpus: 1.5 })).toThrow(/CPU count/)
    expect(() => buildQemuCommand({ disk: { via: 'nbd', exportName: '' } })).toThrow(
      /socket, or a host and a port/,
    )
  })

  it('quotes for the shell and escapes QEMU option commas', () => {
    expect(shellQuote('plain-arg,x=1')).toBe('plain-arg,x=1')
    expect(shellQuote("it's here")).toBe(`'it'\\''s here'`)
    expect(shellQuote('')).toBe("''")
    expect(shellQuote('a$b')).toBe("'a$b'")
    expect(qemuOptionValue('a,b,,c')).toBe('a,,b,,,,c')
    expect(defaultMachine('x86_64')).toBe('q35')
    expect(defaultMachine('aarch64')).toBe('virt')
  })
})

describe('qemu-cmd and launch options', () => {
  it('splits pass-through arguments at --', () => {
    expect(splitExtraArgs(['--headless', 'x', '--', '-m', '1G'])).toEqual({
      own: ['--headless', 'x'],
      extra: ['-m', '1G'],
    })
    expect(splitExtraArgs(['x'])).toEqual({ own: ['x'], extra: [] })
  })

  it('parses memory as QEMU does and validates choices', () => {
    expect(parseMemory('512')).toBe(512)
    expect(parseMemory('2G')).toBe(2048)
    expect(() => parseMemory('1.5K')).toThrow(/whole number of MiB/)
    expect(
      qemuOptionsFrom({ via: 'raw', m: '1G', cpus: '4', accel: 'tcg', headless: true }),
    ).toMatchObject({
      via: 'raw',
      headless: true,
      machine: { memoryMiB: 1024, cpus: 4, accel: 'tcg' },
    })
    expect(() => qemuOptionsFrom({ via: 'vhost' })).toThrow(
      /--via 'vhost' is not one of nbd, native, raw/,
    )
    expect(() => qemuOptionsFrom({ cpus: '0' })).toThrow(/--cpus/)
    expect(() => qemuOptionsFrom({ accel: 'hvf' })).toThrow(/--accel/)
  })
})

describe('buildQemuCommand boot sources', () => {
  const disk = { via: 'raw' as const, path: '/images/vm.raw' }
  const deviceOf = (args: string[]): string[] =>
    args.flatMap((arg, index) => (args[index - 1] === '-device' ? [arg] : []))

  it('gives the disk no boot index when the extra arguments boot a kernel (QEMU gives it 0)', () => {
    for (const extra of [
      ['-kernel', '/k/vmlinuz', '-initrd', '/k/initrd'],
      ['--kernel', '/k/vmlinuz'],
      ['-boot', 'd'],
      ['-cdrom', '/x.iso'],
      ['-device', 'ide-cd,drive=cd9,bootindex=0'],
    ]) {
      const command = buildQemuCommand({ disk, extraArgs: extra })
      expect(deviceOf(command.args)[0]).toBe('virtio-blk-pci,drive=disk0')
      expect(command.args.slice(-extra.length)).toEqual(extra)
    }
    expect(deviceOf(buildQemuCommand({ disk }).args)[0]).toBe(
      'virtio-blk-pci,drive=disk0,bootindex=0',
    )
    // A kernel argument to some other option does not count.
    expect(
      deviceOf(buildQemuCommand({ disk, extraArgs: ['-append', 'console=ttyS0'] }).args)[0],
    ).toBe('virtio-blk-pci,drive=disk0,bootindex=0')
  })

  it('boots a kernel with its initrd and command line, the disk without a boot index', () => {
    const command = buildQemuCommand({
      disk,
      diskInterface: 'ide',
      boot: { kind: 'kernel', kernel: '/k/vmlinuz', initrd: '/k/initrd', cmdline: 'console=ttyS0' },
    })
    expect(deviceOf(command.args)).toEqual(['ide-hd,drive=disk0'])
    const at = command.args.indexOf('-kernel')
    expect(command.args.slice(at, at + 6)).toEqual([
      '-kernel',
      '/k/vmlinuz',
      '-initrd',
      '/k/initrd',
      '-append',
      'console=ttyS0',
    ])
  })

  it('puts a CD-ROM first and the disk second, and UEFI as read-only pflash', () => {
    const command = buildQemuCommand({
      disk,
      boot: { kind: 'cdrom', iso: '/iso/a,b.iso' },
      firmware: { kind: 'uefi', code: '/usr/share/OVMF/OVMF_CODE_4M.fd' },
    })
    expect(deviceOf(command.args)).toEqual([
      'virtio-blk-pci,drive=disk0,bootindex=1',
      'ide-cd,drive=cd0,bootindex=0',
    ])
    expect(command.args).toContain(
      'file=/iso/a,,b.iso,format=raw,media=cdrom,readonly=on,if=none,id=cd0',
    )
    expect(command.args).toContain(
      'if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd',
    )
  })

  it('forwards host ports on loopback unless told, and refuses bad ports', () => {
    const command = buildQemuCommand({
      disk,
      portForwards: [
        { protocol: 'tcp', hostPort: 2222, guestPort: 22 },
        { protocol: 'udp', hostAddress: '0.0.0.0', hostPort: 5353, guestPort: 53 },
      ],
    })
    expect(command.args).toContain(
      'user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:2222-:22,hostfwd=udp:0.0.0.0:5353-:53',
    )
    expect(() =>
      buildQemuCommand({ disk, portForwards: [{ protocol: 'tcp', hostPort: 0, guestPort: 22 }] }),
    ).toThrow(/host port 0/)
    expect(() =>
      buildQemuCommand({
        disk,
        portForwards: [{ protocol: 'tcp', hostAddress: 'a,b', hostPort: 1, guestPort: 22 }],
      }),
    ).toThrow(/a,b/)
  })
})
