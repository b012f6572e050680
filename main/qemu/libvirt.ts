import { EngineError } from '../engine/errors'
import { hostArch } from './binaries'
import {
  DEFAULT_CPUS,
  DEFAULT_MEMORY_MIB,
  defaultMachine,
  type QemuCommandOptions,
  type QemuDiskSource,
} from './command'

// A libvirt domain (https://libvirt.org/formatdomain.html) for the machine a command line
// describes, checked by `virt-xml-validate FILE domain` in tests/interop/qemu/libvirt.test.ts.
// libvirt runs QEMU itself, so what only QEMU's own options can say goes into
// <qemu:commandline> (extra arguments) or an XML comment (what libvirt cannot express).

const QEMU_NAMESPACE = 'http://libvirt.org/schemas/domain/qemu/1.0'

/** Escape text for an XML attribute or element. */
function xml(text: string): string {
  return text
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/'/g, '&apos;')
    .replace(/"/g, '&quot;')
}

/** Text for inside an XML comment ('--' may not appear there). */
function commentText(text: string): string {
  return text.replace(/-{2,}/g, (dashes) => dashes.split('').join(' '))
}

/** The <disk> of the boot disk: the NBD export (network disk) or the raw image file. */
function diskElement(
  disk: QemuDiskSource,
  options: QemuCommandOptions,
  order: number | null,
): string[] {
  const ide = options.diskInterface === 'ide'
  const target = ide ? "<target dev='sda' bus='sata'/>" : "<target dev='vda' bus='virtio'/>"
  const tail = [
    `      ${target}`,
    ...(options.readOnly ? ['      <readonly/>'] : []),
    ...(order !== null ? [`      <boot order='${order}'/>`] : []),
    '    </disk>',
  ]
  if (disk.via === 'raw') {
    return [
      "    <disk type='file' device='disk'>",
      "      <driver name='qemu' type='raw'/>",
      `      <source file='${xml(disk.path)}'/>`,
      ...tail,
    ]
  }
  if (disk.via === 'native') {
    throw new EngineError(
      'NOT_CAPABLE',
      `libvirt has no add-cow driver, so a libvirt domain cannot open ${disk.path} natively; use --via nbd (the export) or --via raw (a flattened overlay).`,
      { path: disk.path, field: 'via', value: 'native' },
    )
  }
  if (disk.tls && 'pskFolder' in disk.tls) {
    throw new EngineError(
      'NOT_CAPABLE',
      "libvirt's NBD disks take TLS with X.509 certificates only (tls='yes'), not pre-shared keys; serve the export with --tls-creds instead of --tls-psk-file.",
      { field: 'tls', value: 'psk' },
    )
  }
  const name = disk.exportName === '' ? '' : ` name='${xml(disk.exportName)}'`
  const tls = disk.tls ? " tls='yes'" : ''
  let host: string
  if (disk.socket !== undefined) host = `<host transport='unix' socket='${xml(disk.socket)}'/>`
  else if (disk.host !== undefined && disk.port !== undefined)
    host = `<host name='${xml(disk.host)}' port='${disk.port}'/>`
  else
    throw new EngineError('BAD_ARGUMENT', 'An NBD disk needs a socket, or a host and a port.', {
      field: 'disk',
    })
  return [
    ...(disk.tls
      ? [
          `    <!-- TLS: libvirt takes the client certificates from qemu.conf's nbd_tls_x509_cert_dir (default /etc/pki/qemu), not from ${commentText(disk.tls.x509Folder)}: put the same ca-cert.pem there. -->`,
        ]
      : []),
    "    <disk type='network' device='disk'>",
    "      <driver name='qemu' type='raw'/>",
    `      <source protocol='nbd'${name}${tls}>`,
    `        ${host}`,
    '      </source>',
    ...tail,
  ]
}

function interfaceElement(options: QemuCommandOptions): string[] {
  if ((options.network ?? 'user') === 'none') return []
  const forwards = options.portForwards ?? []
  if (forwards.length === 0) {
    return ["    <interface type='user'>", "      <model type='virtio'/>", '    </interface>']
  }
  return [
    '    <!-- Port forwards: libvirt forwards ports only with the passt back end (install passt); its user-mode (slirp) network has no hostfwd. -->',
    "    <interface type='user'>",
    "      <backend type='passt'/>",
    ...forwards.flatMap((forward) => [
      `      <portForward proto='${forward.protocol}' address='${xml(forward.hostAddress ?? '127.0.0.1')}'>`,
      `        <range start='${forward.hostPort}' to='${forward.guestPort}'/>`,
      '      </portForward>',
    ]),
    "      <model type='virtio'/>",
    '    </interface>',
  ]
}

/** The serial console: libvirt's pty (virsh console), or the file the command writes. */
function serialElements(options: QemuCommandOptions): string[] {
  const serial = options.serial ?? 'stdio'
  if (serial === 'none') return []
  if (typeof serial === 'object') {
    return [
      "    <serial type='file'>",
      `      <source path='${xml(serial.file)}'/>`,
      "      <target port='0'/>",
      '    </serial>',
    ]
  }
  return [
    '    <!-- The serial console: virsh console NAME. -->',
    "    <serial type='pty'>",
    "      <target port='0'/>",
    '    </serial>',
    "    <console type='pty'>",
    "      <target type='serial' port='0'/>",
    '    </console>',
  ]
}

/** A display for the guest: none when headless, else VNC on loopback (libvirt has no GTK). */
function graphicsElements(options: QemuCommandOptions): string[] {
  const display = options.display
  if (display === 'none') return []
  if (display !== undefined && display.startsWith('sdl')) return ["    <graphics type='sdl'/>"]
  return [
    "    <graphics type='vnc' autoport='yes'>",
    "      <listen type='address' address='127.0.0.1'/>",
    '    </graphics>',
  ]
}

/**
 * A libvirt domain for the machine `options` describes (what buildQemuCommand takes): name,
 * memory, vCPUs, machine type, accelerator, firmware (UEFI: the OVMF code as read-only pflash
 * and the machine's variable store as nvram), boot order or a kernel with initrd and command
 * line, the disk (the NBD export as a network disk, or a flattened overlay's raw file), user
 * networking, the serial console and graphics. Extra QEMU arguments go to <qemu:commandline>.
 * QMP is libvirt's own. NOT_CAPABLE for what libvirt cannot open (add-cow natively, TLS-PSK).
 */
export function libvirtDomainXml(options: QemuCommandOptions): string {
  const arch = options.arch ?? hostArch()
  const machine = options.machine ?? defaultMachine(arch)
  const name = options.name ?? 'addcow-vm'
  const boot = options.boot ?? { kind: 'disk' }
  const firmware = options.firmware ?? { kind: 'bios' }
  const kvm = options.accel === 'kvm'
  const extra = options.extraArgs ?? []
  // Per-device boot order, as the command line's bootindex: a kernel boots by itself.
  const diskOrder = boot.kind === 'kernel' ? null : boot.kind === 'cdrom' ? 2 : 1
  const os = ['  <os>', `    <type arch='${xml(arch)}' machine='${xml(machine)}'>hvm</type>`]
  if (firmware.kind === 'uefi') {
    os.push(`    <loader readonly='yes' type='pflash'>${xml(firmware.code)}</loader>`)
    if (firmware.vars)
      os.push(
        `    <nvram template='${xml(firmware.vars.template)}'>${xml(firmware.vars.file)}</nvram>`,
      )
  }
  if (boot.kind === 'kernel') {
    os.push(`    <kernel>${xml(boot.kernel)}</kernel>`)
    if (boot.initrd !== undefined) os.push(`    <initrd>${xml(boot.initrd)}</initrd>`)
    if (boot.cmdline) os.push(`    <cmdline>${xml(boot.cmdline)}</cmdline>`)
  }
  os.push('  </os>')
  const cdrom =
    boot.kind === 'cdrom'
      ? [
          "    <disk type='file' device='cdrom'>",
          "      <driver name='qemu' type='raw'/>",
          `      <source file='${xml(boot.iso)}'/>`,
          "      <target dev='sdb' bus='sata'/>",
          '      <readonly/>',
          "      <boot order='1'/>",
          '    </disk>',
        ]
      : []
  const lines = [
    `<domain type='${kvm ? 'kvm' : 'qemu'}'${extra.length > 0 ? ` xmlns:qemu='${QEMU_NAMESPACE}'` : ''}>`,
    `  <!-- Made by addcow from the machine its QEMU command line describes.${options.disk.via === 'nbd' ? ' Start the export first (addcow serve, as qemu-cmd prints it); libvirt connects QEMU to it.' : ''} -->`,
    `  <name>${xml(name)}</name>`,
    `  <memory unit='MiB'>${options.memoryMiB ?? DEFAULT_MEMORY_MIB}</memory>`,
    `  <vcpu>${options.cpus ?? DEFAULT_CPUS}</vcpu>`,
    ...os,
    '  <features>',
    '    <acpi/>',
    '  </features>',
    ...(kvm ? ["  <cpu mode='host-passthrough'/>"] : []),
    '  <devices>',
    // libvirt wants an absolute path; otherwise it picks the QEMU for the architecture.
    ...(options.binary?.startsWith('/') ? [`    <emulator>${xml(options.binary)}</emulator>`] : []),
    ...diskElement(options.disk, options, diskOrder),
    ...cdrom,
    ...interfaceElement(options),
    ...serialElements(options),
    ...graphicsElements(options),
    '  </devices>',
  ]
  if (extra.length > 0) {
    lines.push(
      '  <qemu:commandline>',
      ...extra.map((arg) => `    <qemu:arg value='${xml(arg)}'/>`),
      '  </qemu:commandline>',
    )
  }
  lines.push('</domain>')
  return lines.join('\n') + '\n'
}
