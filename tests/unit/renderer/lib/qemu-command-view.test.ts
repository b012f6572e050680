import { describe, expect, it } from 'vitest'
import {
  commandRows,
  commandText,
  DEFAULT_LAUNCH_FORM,
  describeExit,
  launchRequest,
  memoryText,
  shellQuote,
  splitArguments,
  type QemuCommand,
} from '../../../../renderer/src/lib/qemu-command-view'

// The launch screen's rendering of a QEMU command line: one row per option with its
// explanation, the copyable shell text, and the form turned into a request.

/** A command as main/qemu/command.ts builds it for `--via nbd`. */
const COMMAND: QemuCommand = {
  via: 'nbd',
  binary: 'qemu-system-x86_64',
  args: [],
  explained: [
    { args: ['-name', 'addcow-vm.add-cow'], explanation: 'the name QEMU shows' },
    { args: ['-m', '64'], explanation: '64 MiB of guest memory' },
    {
      args: [
        '-blockdev',
        'driver=nbd,node-name=disk0,server.type=unix,server.path=/tmp/my vm.sock',
      ],
      explanation: 'the disk',
    },
    {
      args: ['-chardev', 'stdio,id=console0,signal=off', '-serial', 'chardev:console0'],
      explanation: "the guest's first serial port",
    },
    { args: ['-device', "it's"], explanation: 'extra arguments, passed through as given' },
  ],
  rendering: '',
  prerequisite: {
    args: ['addcow', 'serve', '--socket', '/tmp/my vm.sock', '/images/vm.add-cow'],
    explanation: 'start the export; it runs until Ctrl-C',
  },
}
COMMAND.args = COMMAND.explained.flatMap((group) => group.args)

describe('shellQuote', () => {
  it('leaves plain words alone and single-quotes the rest', () => {
    expect(shellQuote('-m')).toBe('-m')
    expect(shellQuote('file=/a/b.raw,format=raw')).toBe('file=/a/b.raw,format=raw')
    expect(shellQuote('')).toBe("''")
    expect(shellQuote('my vm')).toBe("'my vm'")
    expect(shellQuote("it's")).toBe("'it'\\''s'")
    expect(shellQuote('$HOME')).toBe("'$HOME'")
  })
})

describe('commandRows', () => {
  it('gives one row per option, the explanation on the first row of its group', () => {
    const rows = commandRows(COMMAND)
    expect(rows.map((row) => row.text)).toEqual([
      '-name addcow-vm.add-cow',
      '-m 64',
      "-blockdev 'driver=nbd,node-name=disk0,server.type=unix,server.path=/tmp/my vm.sock'",
      '-chardev stdio,id=console0,signal=off',
      '-serial chardev:console0',
      "-device 'it'\\''s'",
    ])
    expect(rows.map((row) => row.first)).toEqual([true, true, true, true, false, true])
    expect(rows.map((row) => row.groupSize)).toEqual([1, 1, 1, 2, 2, 1])
    expect(rows[3]?.explanation).toBe("the guest's first serial port")
    expect(rows[4]?.explanation).toBe("the guest's first serial port")
  })
})

describe('commandText', () => {
  it('is a shell command with one option a line, the export to start first as a comment', () => {
    expect(commandText(COMMAND)).toBe(
      [
        '# Start the export; it runs until Ctrl-C:',
        "#   addcow serve --socket '/tmp/my vm.sock' /images/vm.add-cow",
        'qemu-system-x86_64 \\',
        '  -name addcow-vm.add-cow \\',
        '  -m 64 \\',
        "  -blockdev 'driver=nbd,node-name=disk0,server.type=unix,server.path=/tmp/my vm.sock' \\",
        '  -chardev stdio,id=console0,signal=off \\',
        '  -serial chardev:console0 \\',
        "  -device 'it'\\''s'",
        '',
      ].join('\n'),
    )
  })

  it('has no comment without a prerequisite, and no continuation without options', () => {
    const raw: QemuCommand = { ...COMMAND, via: 'raw', prerequisite: null, explained: [] }
    expect(commandText(raw)).toBe('qemu-system-x86_64\n')
    const one: QemuCommand = { ...raw, explained: [{ args: ['-m', '1'], explanation: 'x' }] }
    expect(commandText(one)).toBe('qemu-system-x86_64 \\\n  -m 1\n')
  })
})

describe('splitArguments', () => {
  it('splits on blanks and honours quotes and backslashes, without expansion', () => {
    expect(splitArguments('')).toEqual({ args: [] })
    expect(splitArguments('  -device  isa-debug-exit,iobase=0xf4 -no-reboot ')).toEqual({
      args: ['-device', 'isa-debug-exit,iobase=0xf4', '-no-reboot'],
    })
    expect(
      splitArguments(`-name 'my vm' -append "console=ttyS0 \\"quiet\\"" a\\ b $HOME ''`),
    ).toEqual({ args: ['-name', 'my vm', '-append', 'console=ttyS0 "quiet"', 'a b', '$HOME', ''] })
  })

  it('refuses an unclosed quote with a sentence', () => {
    expect(splitArguments("-name 'vm")).toEqual({
      error: 'The extra arguments have a single quote that is never closed.',
    })
    expect(splitArguments('-name "vm')).toEqual({
      error: 'The extra arguments have a double quote that is never closed.',
    })
  })
})

describe('launchRequest', () => {
  it('asks for copy-on-read only when it is ticked', () => {
    const built = launchRequest('/images/vm.add-cow', { ...DEFAULT_LAUNCH_FORM, copyOnRead: true })
    expect(built).toMatchObject({ request: { copyOnRead: true } })
    const plain = launchRequest('/images/vm.add-cow', DEFAULT_LAUNCH_FORM)
    expect('request' in plain && 'copyOnRead' in plain.request).toBe(false)
  })

  it('turns the form into the launch request', () => {
    expect(launchRequest('/images/vm.add-cow', DEFAULT_LAUNCH_FORM)).toEqual({
      request: {
        path: '/images/vm.add-cow',
        via: 'nbd',
        memoryMiB: 2048,
        cpus: 2,
        headless: false,
        readOnly: false,
        network: 'user',
      },
    })
    expect(
      launchRequest('/vm.raw', {
        ...DEFAULT_LAUNCH_FORM,
        via: 'raw',
        machine: ' pc ',
        display: 'vnc',
        network: 'none',
        readOnly: true,
        extraArgs: '-device isa-debug-exit',
      }),
    ).toEqual({
      request: {
        path: '/vm.raw',
        via: 'raw',
        machine: 'pc',
        memoryMiB: 2048,
        cpus: 2,
        headless: false,
        display: 'vnc',
        readOnly: true,
        network: 'none',
        extraArgs: ['-device', 'isa-debug-exit'],
      },
    })
  })

  it('makes headless the none display, with no display value', () => {
    const built = launchRequest('/vm', { ...DEFAULT_LAUNCH_FORM, display: 'none' })
    expect(built).toMatchObject({ request: { headless: true } })
    expect('request' in built && 'display' in built.request).toBe(false)
  })

  it('names the value at fault', () => {
    expect(launchRequest('/vm', { ...DEFAULT_LAUNCH_FORM, machine: 'q35,accel=kvm' })).toEqual({
      error: "The machine type 'q35,accel=kvm' is not a plain name such as q35 or pc.",
    })
    expect(launchRequest('/vm', { ...DEFAULT_LAUNCH_FORM, memoryMiB: 8 })).toEqual({
      error: 'The memory size 8 MiB is below the 16 MiB minimum.',
    })
    expect(launchRequest('/vm', { ...DEFAULT_LAUNCH_FORM, cpus: 0 })).toEqual({
      error: 'The CPU count 0 is not a whole number from 1 to 1024.',
    })
    expect(launchRequest('/vm', { ...DEFAULT_LAUNCH_FORM, extraArgs: 'a '.repeat(65) })).toEqual({
      error: 'There are 65 extra arguments; at most 64 are accepted.',
    })
    expect(launchRequest('/vm', { ...DEFAULT_LAUNCH_FORM, extraArgs: '"x' })).toHaveProperty(
      'error',
    )
  })
})

describe('describeExit and memoryText', () => {
  it('says how QEMU ended', () => {
    expect(describeExit({ code: 0, signal: null, status: 0 })).toBe(
      'QEMU exited normally (status 0).',
    )
    expect(describeExit({ code: 33, signal: null, status: 33 })).toBe('QEMU exited with status 33.')
    expect(describeExit({ code: null, signal: 'SIGKILL', status: 137 })).toBe(
      'QEMU was stopped by SIGKILL (status 137).',
    )
  })

  it('shows memory in MiB below a GiB and in GiB above', () => {
    expect(memoryText(64)).toBe('64 MiB')
    expect(memoryText(1024)).toBe('1 GiB')
    expect(memoryText(1536)).toBe('1.5 GiB')
    expect(memoryText(2048)).toBe('2 GiB')
    expect(memoryText(1100)).toBe('1.07 GiB')
    expect(memoryText(1025)).toBe('1 GiB')
  })
})
