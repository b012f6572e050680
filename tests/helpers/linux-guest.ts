import { execFile } from 'node:child_process'
import { chmod, copyFile, mkdir, readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe } from 'vitest'
import { hasTool, requireTools, tempDir } from './tools'

// A real Linux guest for boot tests, made from Debian packages without installing anything:
// the kernel from a linux-image .deb unpacked with dpkg-deb -x (the cloud kernel has virtio
// as modules, so the modules the disk needs go into the initramfs), and an initramfs of
// busybox-static whose /init runs a script the test gives, then powers off.

const run = promisify(execFile)

/** Where Debian keeps downloaded packages; ADDCOW_KERNEL_DEB names a .deb explicitly. */
const APT_ARCHIVES = '/var/cache/apt/archives'
/** The modules virtio-blk needs, in load order (modinfo -F depends). */
const VIRTIO_MODULES = [
  'drivers/virtio/virtio.ko',
  'drivers/virtio/virtio_ring.ko',
  'drivers/virtio/virtio_pci_legacy_dev.ko',
  'drivers/virtio/virtio_pci_modern_dev.ko',
  'drivers/virtio/virtio_pci.ko',
  'drivers/block/virtio_blk.ko',
]

/** A bootable guest: the kernel and initramfs paths, and the line its /init prints last. */
export interface LinuxGuest {
  kernel: string
  initrd: string
  /** Printed on the serial console after the script ran (then the guest powers off). */
  doneLine: string
}

/** The linux-image .deb to use, or null (with the reason) when there is none. */
export async function findKernelPackage(): Promise<{ deb: string } | { missing: string }> {
  if (process.env.ADDCOW_KERNEL_DEB) return { deb: process.env.ADDCOW_KERNEL_DEB }
  let names: string[] = []
  try {
    names = await readdir(APT_ARCHIVES)
  } catch {
    // no apt cache
  }
  // A versioned kernel package (linux-image-6.1.0-53-cloud-amd64_...), not the meta package.
  const deb = names
    .filter((name) => /^linux-image-\d[^_]*-amd64_.*\.deb$/.test(name))
    .sort()
    .pop()
  if (deb) return { deb: join(APT_ARCHIVES, deb) }
  return {
    missing: `no linux-image-*-amd64 .deb in ${APT_ARCHIVES} (apt-get download linux-image-cloud-amd64 there, or set ADDCOW_KERNEL_DEB)`,
  }
}

/** The tools {@link buildLinuxGuest} needs. */
export const LINUX_GUEST_TOOLS = ['dpkg-deb', 'busybox', 'cpio', 'gzip']

/**
 * The modules in an order insmod accepts: each after those its `depends=` (in .modinfo) names.
 * Kernels differ (in 6.1.0-57 virtio.ko needs virtio_ring.ko, earlier builds the reverse).
 */
async function dependencyOrder(folder: string, modules: readonly string[]): Promise<string[]> {
  const nameOf = (module: string): string => module.split('/').pop()!.replace(/\.ko$/, '')
  const depends = new Map<string, string[]>()
  for (const module of modules) {
    const text = (await readFile(join(folder, module))).toString('latin1')
    const found = /depends=([^\0]*)\0/.exec(text)?.[1] ?? ''
    depends.set(nameOf(module), found.split(',').filter(Boolean))
  }
  const ordered: string[] = []
  const visit = (module: string): void => {
    if (ordered.includes(module)) return
    for (const dependency of depends.get(nameOf(module)) ?? []) {
      const next = modules.find((candidate) => nameOf(candidate) === dependency)
      if (next) visit(next)
    }
    ordered.push(module)
  }
  modules.forEach(visit)
  return ordered
}

/**
 * Unpack the kernel and build an initramfs whose /init loads virtio-blk (and `extraModules`,
 * paths under the kernel's modules folder such as drivers/acpi/button.ko, in order), runs
 * `script` (busybox sh; the disk is /dev/vda), prints `doneLine` and powers off (-no-reboot
 * makes QEMU exit 0).
 */
export async function buildLinuxGuest(
  folder: string,
  deb: string,
  script: string,
  extraModules: readonly string[] = [],
): Promise<LinuxGuest> {
  for (const tool of LINUX_GUEST_TOOLS)
    if (!hasTool(tool)) throw new Error(`${tool} is missing (apt-get install busybox-static cpio)`)
  const unpacked = join(folder, 'kernel-package')
  await run('dpkg-deb', ['-x', deb, unpacked])
  const boot = await readdir(join(unpacked, 'boot'))
  const vmlinuz = boot.find((name) => name.startsWith('vmlinuz-'))
  if (!vmlinuz) throw new Error(`${deb} holds no boot/vmlinuz-*`)
  const release = vmlinuz.slice('vmlinuz-'.length)
  const modules = join(unpacked, 'lib', 'modules', release, 'kernel')

  const root = join(folder, 'initramfs')
  for (const sub of ['bin', 'proc', 'sys', 'dev', 'mnt', 'modules'])
    await mkdir(join(root, sub), { recursive: true })
  const { stdout: busyboxPath } = await run('sh', ['-c', 'command -v busybox'])
  await copyFile(busyboxPath.trim(), join(root, 'bin', 'busybox'))
  const loads: string[] = []
  for (const module of [...(await dependencyOrder(modules, VIRTIO_MODULES)), ...extraModules]) {
    const name = module.split('/').pop()!
    await copyFile(join(modules, module), join(root, 'modules', name))
    loads.push(`insmod /modules/${name}`)
  }
  const doneLine = 'ADDCOW-LINUX-GUEST-DONE'
  await writeFile(
    join(root, 'init'),
    [
      '#!/bin/busybox sh',
      '/bin/busybox --install -s /bin',
      'mount -t proc proc /proc',
      'mount -t sysfs sys /sys',
      'mount -t devtmpfs dev /dev',
      ...loads,
      'for i in 1 2 3 4 5 6 7 8 9 10; do [ -b /dev/vda ] && break; sleep 1; done',
      script,
      'sync',
      `echo ${doneLine}`,
      'poweroff -f',
      '',
    ].join('\n'),
  )
  await chmod(join(root, 'init'), 0o755)
  const initrd = join(folder, 'initrd.gz')
  await run('sh', [
    '-c',
    `cd '${root}' && find . | cpio -o -H newc --quiet | gzip -1 > '${initrd}'`,
  ])
  return { kernel: join(unpacked, 'boot', vmlinuz), initrd, doneLine }
}

/** QEMU's arguments that boot the guest's kernel and initramfs (no reboot: a panic ends QEMU). */
export function kernelArgs(guest: LinuxGuest, append = 'console=ttyS0 panic=-1 quiet'): string[] {
  return ['-kernel', guest.kernel, '-initrd', guest.initrd, '-append', append, '-no-reboot']
}

/** The machine every Linux-guest test launches: headless TCG, 256 MiB, one CPU, no network. */
export const GUEST_MACHINE = [
  '--headless',
  '--accel',
  'tcg',
  '-m',
  '256',
  '--cpus',
  '1',
  '--network',
  'none',
] as const

/**
 * `addcow launch` of `disk` with the guest's kernel, its serial port into the file `serial`,
 * and a control socket for live jobs.
 */
export function launchGuestArgs(
  guest: LinuxGuest,
  disk: string,
  files: { serial: string; control: string },
): string[] {
  return [
    'launch',
    ...GUEST_MACHINE,
    '--serial',
    files.serial,
    '--control-socket',
    files.control,
    disk,
    '--',
    ...kernelArgs(guest),
  ]
}

/** A test file's Linux guest: its describe, and the folder and guest its beforeAll builds. */
export interface LinuxGuestSuite {
  /** `describe` where the tools and a kernel package are here, else `describe.skip`. */
  describe: typeof describe | typeof describe.skip
  /** The file's temporary folder (the guest's kernel and initramfs are in it). */
  readonly folder: string
  readonly guest: LinuxGuest
}

/**
 * The set-up every Linux-guest test file shares: the tools it needs (`tools` besides qemu and
 * the guest's own), a kernel package (missing: a visible SKIP, or a failure under CI=true), and
 * a beforeAll that builds the guest running `script` in a temporary folder `prefix…`, removed
 * afterwards. Call it at the top level of the test file.
 */
export async function linuxGuestSuite(
  prefix: string,
  script: string,
  options: { tools?: readonly string[]; extraModules?: readonly string[] } = {},
): Promise<LinuxGuestSuite> {
  const available = requireTools(
    'qemu-system-x86_64',
    ...(options.tools ?? []),
    ...LINUX_GUEST_TOOLS,
  )
  const kernelPackage = await findKernelPackage()
  if ('missing' in kernelPackage) {
    if (process.env.CI === 'true') throw new Error(kernelPackage.missing)
    console.warn(`SKIP: ${kernelPackage.missing}`)
  }
  let folder: { path: string; cleanup: () => Promise<void> } | null = null
  let guest: LinuxGuest | null = null
  beforeAll(async () => {
    folder = await tempDir(prefix)
    if ('deb' in kernelPackage)
      guest = await buildLinuxGuest(folder.path, kernelPackage.deb, script, options.extraModules)
  })
  afterAll(async () => folder?.cleanup())
  return {
    describe: available && 'deb' in kernelPackage ? describe : describe.skip,
    get folder() {
      if (!folder) throw new Error('The Linux guest suite has not started (beforeAll).')
      return folder.path
    },
    get guest() {
      if (!guest) throw new Error('The Linux guest was not built (no kernel package).')
      return guest
    },
  }
}
