import { describe, expect, it } from 'vitest'
import { SERVER_V8_FLAGS, serverRelaunchArgv } from '../../../main/cli/relaunch'

const NODE = '/usr/bin/node'
const SCRIPT = '/opt/addcow/out/cli/addcow.mjs'

function view(args: string[], execArgv: string[] = [], nodeOptions?: string) {
  return { execPath: NODE, execArgv, argv: [NODE, SCRIPT, ...args], nodeOptions }
}

describe('serverRelaunchArgv', () => {
  it('runs serve and launch again with the server V8 flags before the user options', () => {
    expect(serverRelaunchArgv(view(['serve', '--socket', 's', 'vm.add-cow']))).toEqual([
      NODE,
      ...SERVER_V8_FLAGS,
      SCRIPT,
      ...['serve', '--socket', 's', 'vm.add-cow'],
    ])
    expect(
      serverRelaunchArgv(
        view(['launch', 'vm.add-cow', '--', '-m', '1G'], ['--enable-source-maps']),
      ),
    ).toEqual([
      NODE,
      ...SERVER_V8_FLAGS,
      '--enable-source-maps',
      SCRIPT,
      ...['launch', 'vm.add-cow', '--', '-m', '1G'],
    ])
  })

  it('leaves every other command, and a bare addcow, alone', () => {
    for (const args of [[], ['info', 'vm.add-cow'], ['help', 'serve'], ['web'], ['--version']])
      expect(serverRelaunchArgv(view(args))).toBeNull()
    expect(
      serverRelaunchArgv({ execPath: NODE, execArgv: [], argv: [NODE], nodeOptions: '' }),
    ).toBeNull()
  })

  it('happens once: after the relaunch every flag is among the options', () => {
    const again = serverRelaunchArgv(view(['serve', 'vm.add-cow']))!
    const script = again.indexOf(SCRIPT)
    expect(serverRelaunchArgv(view(['serve', 'vm.add-cow'], again.slice(1, script)))).toBeNull()
  })

  it('keeps what the user set, on the command line or in NODE_OPTIONS, and adds only the rest', () => {
    const semi = SERVER_V8_FLAGS.find((flag) => flag.startsWith('--max-semi-space-size'))!
    const others = SERVER_V8_FLAGS.filter((flag) => flag !== semi)
    expect(serverRelaunchArgv(view(['serve', 'x'], ['--max-semi-space-size=16']))).toEqual([
      NODE,
      ...others,
      '--max-semi-space-size=16',
      SCRIPT,
      'serve',
      'x',
    ])
    // V8 takes underscores for dashes.
    expect(
      serverRelaunchArgv(view(['serve', 'x'], [], '--max_semi_space_size=16 --no-warnings')),
    ).toEqual([NODE, ...others, SCRIPT, 'serve', 'x'])
    const all = SERVER_V8_FLAGS.map((flag) => flag.replace(/=.*/, '=1')).join(' ')
    expect(serverRelaunchArgv(view(['serve', 'x'], [], all))).toBeNull()
  })
})
