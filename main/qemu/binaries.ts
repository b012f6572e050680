import { execFile } from 'node:child_process'
import { constants } from 'node:fs'
import { access, open, readdir, stat } from 'node:fs/promises'
import { delimiter, join } from 'node:path'
import { realPath } from '../engine/fs'

/** An installed `qemu-system-*` emulator. */
export interface QemuBinary {
  /** Absolute path. */
  path: string
  /** File name, e.g. qemu-system-x86_64. */
  name: string
  /** Target architecture, the part after `qemu-system-`. */
  arch: string
  /** "7.2.22", or null when `--version` did not answer as QEMU does. */
  version: string | null
  /** The first line of `--version`, as printed. */
  versionText: string | null
}

const NAME = /^qemu-system-([a-z0-9_]+)$/
/** Time allowed for `qemu-system-* --version`. */
const VERSION_TIMEOUT_MS = 10_000

/** QEMU's name for the architecture Node runs on (x64 → x86_64, arm64 → aarch64, ...). */
export function hostArch(arch: string = process.arch): string {
  const names: Record<string, string> = {
    x64: 'x86_64',
    ia32: 'i386',
    arm64: 'aarch64',
    arm: 'arm',
    ppc64: 'ppc64',
    riscv64: 'riscv64',
    s390x: 's390x',
    loong64: 'loongarch64',
    mips: 'mips',
    mipsel: 'mipsel',
  }
  return names[arch] ?? arch
}

/** Parse `qemu-system-x86_64 --version` output: the version number, or null. */
export function parseQemuVersion(text: string): string | null {
  const match = /QEMU emulator version (\d+\.\d+(?:\.\d+)?)/.exec(text)
  return match ? match[1]! : null
}

function versionOf(path: string): Promise<{ version: string | null; text: string | null }> {
  return new Promise((resolve) => {
    execFile(
      path,
      ['--version'],
      { timeout: VERSION_TIMEOUT_MS, maxBuffer: 64 * 1024 },
      (error, stdout) => {
        if (error) {
          resolve({ version: null, text: null })
          return
        }
        const first = stdout.split('\n')[0]?.trim() ?? ''
        resolve({ version: parseQemuVersion(stdout), text: first === '' ? null : first })
      },
    )
  })
}

async function isExecutableFile(path: string): Promise<boolean> {
  try {
    const info = await stat(path)
    if (!info.isFile()) return false
    await access(path, constants.X_OK)
    return true
  } catch {
    return false
  }
}

/**
 * Every `qemu-system-*` on PATH (the first of each name wins, as the shell would pick it),
 * with its version from `--version`. Extra folders are searched after PATH.
 */
export async function findQemuBinaries(
  options: { path?: string; extraFolders?: string[] } = {},
): Promise<QemuBinary[]> {
  const folders = [
    ...(options.path ?? process.env.PATH ?? '').split(delimiter),
    ...(options.extraFolders ?? []),
  ].filter((folder) => folder !== '')
  const seen = new Map<string, string>()
  for (const folder of folders) {
    let names: string[]
    try {
      names = await readdir(folder)
    } catch {
      continue
    }
    for (const name of names.sort()) {
      if (!NAME.test(name) || seen.has(name)) continue
      const path = join(folder, name)
      if (await isExecutableFile(path)) seen.set(name, path)
    }
  }
  const binaries: QemuBinary[] = []
  for (const [name, path] of seen) {
    const { version, text } = await versionOf(path)
    binaries.push({
      path: await realPath(path),
      name,
      arch: NAME.exec(name)![1]!,
      version,
      versionText: text,
    })
  }
  return binaries
}

/** The binary for an architecture (default: the host's), or null when none is installed. */
export async function findQemuBinary(
  arch: string = hostArch(),
  options: { path?: string } = {},
): Promise<QemuBinary | null> {
  const binaries = await findQemuBinaries(options)
  return binaries.find((binary) => binary.arch === arch) ?? null
}

/**
 * Whether KVM can be used: /dev/kvm exists and this user may open it for reading and writing
 * (QEMU opens it O_RDWR). Opening proves more than access(), which ignores some ACLs.
 */
export async function kvmUsable(device = '/dev/kvm'): Promise<boolean> {
  try {
    const handle = await open(device, constants.O_RDWR)
    await handle.close()
    return true
  } catch {
    return false
  }
}
