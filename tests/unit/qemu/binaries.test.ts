import { chmod, mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import {
  findQemuBinaries,
  hostArch,
  kvmUsable,
  parseQemuVersion,
} from '../../../main/qemu/binaries'
import { tempDir } from '../../helpers/tools'

let cleanup: (() => Promise<void>) | null = null
afterEach(async () => {
  await cleanup?.()
  cleanup = null
})

async function script(folder: string, name: string, body: string): Promise<void> {
  const path = join(folder, name)
  await writeFile(path, `#!/bin/sh\n${body}\n`)
  await chmod(path, 0o755)
}

describe('QEMU discovery', () => {
  it('reads the version QEMU prints', () => {
    expect(
      parseQemuVersion('QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)\nCopyright'),
    ).toBe('7.2.22')
    expect(parseQemuVersion('QEMU emulator version 9.1.0\n')).toBe('9.1.0')
    expect(parseQemuVersion('something else')).toBeNull()
  })

  it('names the host architecture as QEMU does', () => {
    expect(hostArch('x64')).toBe('x86_64')
    expect(hostArch('arm64')).toBe('aarch64')
    expect(hostArch('s390x')).toBe('s390x')
  })

  it('finds qemu-system-* executables on a search path, first folder first, with versions', async () => {
    const folder = await tempDir('addcow-qemu-bin-')
    cleanup = folder.cleanup
    const first = join(folder.path, 'first')
    const second = join(folder.path, 'second')
    await mkdir(first)
    await mkdir(second)
    await script(first, 'qemu-system-x86_64', 'echo "QEMU emulator version 9.2.1"')
    await script(second, 'qemu-system-x86_64', 'echo "QEMU emulator version 1.0.0"')
    await script(second, 'qemu-system-aarch64', 'exit 3')
    await writeFile(join(second, 'qemu-system-riscv64'), 'not executable')
    await script(second, 'qemu-img', 'echo "qemu-img version 9"')
    const found = await findQemuBinaries({
      path: [first, second, join(folder.path, 'missing')].join(':'),
    })
    expect(found.map((binary) => [binary.name, binary.arch, binary.version])).toEqual([
      ['qemu-system-x86_64', 'x86_64', '9.2.1'],
      ['qemu-system-aarch64', 'aarch64', null],
    ])
    expect(found[0]!.path).toBe(join(first, 'qemu-system-x86_64'))
  })

  it('says KVM is unusable when the device cannot be opened', async () => {
    expect(await kvmUsable('/nonexistent/kvm')).toBe(false)
  })
})
