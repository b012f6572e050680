import { execFileSync } from 'node:child_process'
import { describe, expect, it } from 'vitest'
import {
  parseDisplayHelp,
  parseFormatHelp,
  parseMachineHelp,
  probeQemuCapabilities,
} from '../../../main/qemu/capabilities'
import { findQemuBinary } from '../../../main/qemu/binaries'
import { requireTools } from '../../helpers/tools'

// What QEMU supports, from its own help output (main/qemu/capabilities.ts): the parsers on
// QEMU 7.2's text, and the probe against the installed QEMU compared with asking it directly.

describe('QEMU help parsers', () => {
  it('reads display backends, machine types and block formats', () => {
    expect(
      parseDisplayHelp('Available display backend types:\nnone\negl-headless\ncurses\ngtk\n'),
    ).toEqual(['none', 'egl-headless', 'curses', 'gtk'])
    expect(
      parseMachineHelp(
        'Supported machines are:\n' +
          'pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\n' +
          'pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)\n' +
          'q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)\n',
      ),
    ).toEqual([
      {
        name: 'pc',
        description: 'Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)',
        isDefault: false,
      },
      { name: 'pc-i440fx-7.2', description: 'Standard PC (i440FX + PIIX, 1996)', isDefault: true },
      {
        name: 'q35',
        description: 'Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)',
        isDefault: false,
      },
    ])
    expect(
      parseFormatHelp('Supported formats: raw qcow2 nbd\nSupported formats (read-only): raw\n'),
    ).toEqual(['raw', 'qcow2', 'nbd'])
    expect(parseFormatHelp('nothing useful')).toEqual([])
  })

  it("matches the installed QEMU's own answers", async () => {
    if (!requireTools('qemu-system-x86_64')) return
    const binary = (await findQemuBinary('x86_64'))!.path
    const capabilities = await probeQemuCapabilities(binary)
    const formats = execFileSync(binary, ['-drive', 'format=help'], { encoding: 'utf8' })
    expect(capabilities.nativeAddCow).toBe(/\badd-cow\b/.test(formats.split('\n')[0]!))
    expect(capabilities.displays).toContain('none')
    expect(capabilities.machines.map((machine) => machine.name)).toContain('q35')
    expect(capabilities.machines.filter((machine) => machine.isDefault)).toHaveLength(1)
    expect(probeQemuCapabilities(binary)).toBe(probeQemuCapabilities(binary))
  })
})
