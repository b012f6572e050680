import { execFile } from 'node:child_process'
import { access, constants } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'

/** A machine type QEMU offers (`-machine help`). */
export interface QemuMachineType {
  name: string
  description: string
  /** QEMU's default machine for this binary. */
  isDefault: boolean
}

/** What an installed QEMU can do, probed once per binary (`-display help`, ...). */
export interface QemuCapabilities {
  /** Display backends `-display help` lists (vnc is built in and not listed). */
  displays: string[]
  machines: QemuMachineType[]
  /** Block formats `-drive format=help` lists. */
  formats: string[]
  /** This QEMU has the add-cow driver (`--via native`). */
  nativeAddCow: boolean
  /** OVMF code images found in Debian's ovmf package paths, best first. */
  uefiFirmware: string[]
}

/** Debian's ovmf package: the 4 MiB build first (what current guests expect). */
const OVMF_CANDIDATES = [
  '/usr/share/OVMF/OVMF_CODE_4M.fd',
  '/usr/share/OVMF/OVMF_CODE.fd',
  '/usr/share/ovmf/OVMF.fd',
  '/usr/share/qemu/OVMF.fd',
]
const HELP_TIMEOUT_MS = 10_000

function helpText(binary: string, args: string[]): Promise<string> {
  return new Promise((resolve) => {
    execFile(binary, args, { timeout: HELP_TIMEOUT_MS, maxBuffer: 1024 * 1024 }, (_error, stdout) =>
      resolve(typeof stdout === 'string' ? stdout : ''),
    )
  })
}

/** Parse `-display help`: one backend per line after the heading. */
export function parseDisplayHelp(text: string): string[] {
  const lines = text.split('\n').map((line) => line.trim())
  const start = lines.findIndex((line) => /^Available display backend types:/i.test(line))
  return lines.slice(start + 1).filter((line) => /^[a-z0-9-]+$/.test(line))
}

/** Parse `-machine help`: `name  description [(alias of x)] [(default)]`. */
export function parseMachineHelp(text: string): QemuMachineType[] {
  const machines: QemuMachineType[] = []
  for (const line of text.split('\n')) {
    const match = /^(\S+)\s+(.+)$/.exec(line.trim())
    if (!match || /^Supported$/.test(match[1]!)) continue
    const description = match[2]!.trim()
    machines.push({
      name: match[1]!,
      description: description.replace(/\s*\(default\)\s*$/, ''),
      isDefault: /\(default\)\s*$/.test(description),
    })
  }
  return machines
}

/** Parse `-drive format=help`: the first "Supported formats:" line. */
export function parseFormatHelp(text: string): string[] {
  const match = /^Supported formats:(.*)$/m.exec(text)
  return match ? match[1]!.trim().split(/\s+/).filter(Boolean) : []
}

/**
 * The variable store template that goes with an OVMF code image, by Debian's (and Fedora's)
 * naming: OVMF_CODE_4M.fd → OVMF_VARS_4M.fd, the Secure Boot build with the store that has
 * Microsoft's keys enrolled (OVMF_CODE_4M.secboot.fd → OVMF_VARS_4M.ms.fd). Null for an image
 * with no _CODE in its name (a combined OVMF.fd keeps its variables in itself: no store).
 */
export function uefiVarsTemplateFor(code: string): string | null {
  const name = basename(code)
  if (!name.includes('_CODE')) return null
  return join(dirname(code), name.replace('_CODE', '_VARS').replace(/\.secboot\.fd$/, '.ms.fd'))
}

/** Debian's OVMF code images present on this host. */
export async function findUefiFirmware(candidates = OVMF_CANDIDATES): Promise<string[]> {
  const found: string[] = []
  for (const path of candidates) {
    try {
      await access(path, constants.R_OK)
      found.push(path)
    } catch {
      // not installed
    }
  }
  return found
}

const probes = new Map<string, Promise<QemuCapabilities>>()

/** Ask `binary` what it supports; cached per binary for the life of the process. */
export function probeQemuCapabilities(binary: string): Promise<QemuCapabilities> {
  let probe = probes.get(binary)
  if (!probe) {
    probe = (async () => {
      const [displays, machines, formats, uefiFirmware] = await Promise.all([
        helpText(binary, ['-display', 'help']).then(parseDisplayHelp),
        helpText(binary, ['-machine', 'help']).then(parseMachineHelp),
        helpText(binary, ['-drive', 'format=help']).then(parseFormatHelp),
        findUefiFirmware(),
      ])
      return {
        displays,
        machines,
        formats,
        nativeAddCow: formats.includes('add-cow'),
        uefiFirmware,
      }
    })()
    probes.set(binary, probe)
  }
  return probe
}
