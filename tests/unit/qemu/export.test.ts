// The exports of a command line: the UEFI variable store and X.509 TLS in the argv, the shell
// script's shape, and the libvirt domain's escaping and refusals. The interop suites run them
// (export-script, libvirt, uefi-vars, tls-x509); these pin the text.
import { describe, expect, it } from 'vitest'
import { uefiVarsTemplateFor } from '../../../main/qemu/capabilities'
import { buildQemuCommand, type QemuCommandOptions } from '../../../main/qemu/command'
import { exportScript } from '../../../main/qemu/export-script'
import { launchCommandOptions, UEFI_VARS_FILE } from '../../../main/qemu/launcher'
import { libvirtDomainXml } from '../../../main/qemu/libvirt'

const nbd: QemuCommandOptions['disk'] = {
  via: 'nbd',
  socket: '/run/vm/nbd.sock',
  exportName: '',
  image: '/vm/a.add-cow',
}
const CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd'

describe('the UEFI variable store', () => {
  it('finds the template beside the code image by Debian’s names, none for a combined image', () => {
    expect(uefiVarsTemplateFor(CODE)).toBe('/usr/share/OVMF/OVMF_VARS_4M.fd')
    expect(uefiVarsTemplateFor('/usr/share/OVMF/OVMF_CODE.fd')).toBe('/usr/share/OVMF/OVMF_VARS.fd')
    expect(uefiVarsTemplateFor('/usr/share/OVMF/OVMF_CODE_4M.secboot.fd')).toBe(
      '/usr/share/OVMF/OVMF_VARS_4M.ms.fd',
    )
    expect(uefiVarsTemplateFor('/usr/share/ovmf/OVMF.fd')).toBeNull()
  })

  it('is a writable pflash after the read-only code', () => {
    const command = buildQemuCommand({
      disk: nbd,
      firmware: {
        kind: 'uefi',
        code: CODE,
        vars: { file: '/data/machines/m,1/OVMF_VARS.fd', template: '/t.fd' },
      },
    })
    const unit0 = command.args.indexOf(`if=pflash,format=raw,unit=0,readonly=on,file=${CODE}`)
    const unit1 = command.args.indexOf(
      'if=pflash,format=raw,unit=1,file=/data/machines/m,,1/OVMF_VARS.fd',
    )
    expect(unit0).toBeGreaterThan(0)
    expect(unit1).toBe(unit0 + 2)
  })

  it('of a launch that is not a saved machine lives in the run folder, and goes with it', () => {
    const options = launchCommandOptions(
      { image: '/vm/a.add-cow', machine: { firmware: { kind: 'uefi', code: CODE } } },
      {
        binary: '/usr/bin/qemu-system-x86_64',
        arch: 'x86_64',
        accelerator: { accel: 'tcg', reason: 'test' },
        image: '/vm/a.add-cow',
        runFolder: '/run/addcow-vm-a',
      },
    )
    expect(options.firmware).toEqual({
      kind: 'uefi',
      code: CODE,
      vars: {
        file: `/run/addcow-vm-a/${UEFI_VARS_FILE}`,
        template: '/usr/share/OVMF/OVMF_VARS_4M.fd',
      },
    })
  })
})

describe('X.509 TLS on the NBD disk', () => {
  it('adds the tls-creds-x509 client object and serves with --tls-creds', () => {
    const command = buildQemuCommand({
      disk: {
        via: 'nbd',
        host: 'store.example',
        port: 10809,
        exportName: 'vm',
        image: '/vm/a.add-cow',
        tls: { x509Folder: '/etc/pki/a,b' },
      },
    })
    expect(command.args).toContain('tls-creds-x509,id=tls0,endpoint=client,dir=/etc/pki/a,,b')
    expect(command.args).toContain(
      'driver=nbd,node-name=disk0,server.type=inet,server.host=store.example,server.port=10809,export=vm,tls-creds=tls0',
    )
    expect(command.prerequisite!.args).toEqual([
      'addcow',
      'serve',
      '--host',
      'store.example',
      '--port',
      '10809',
      '--export',
      'vm',
      '--tls-creds',
      '/etc/pki/a,b',
      '/vm/a.add-cow',
    ])
  })
})

describe('the serve line', () => {
  it('repeats the format and the names this run allowed, before the image', () => {
    const command = buildQemuCommand({
      disk: { ...nbd, serveOptions: ['-f', 'add-cow', '--allow-name', '/bases/b.raw'] },
    })
    expect(command.prerequisite!.args).toEqual([
      'addcow',
      'serve',
      '--socket',
      '/run/vm/nbd.sock',
      '-f',
      'add-cow',
      '--allow-name',
      '/bases/b.raw',
      '/vm/a.add-cow',
    ])
  })
})

describe('exportScript', () => {
  it('serves, waits for the URI, runs the argv quoted, and cleans up in a trap', () => {
    const options: QemuCommandOptions = { disk: nbd, extraArgs: ["it's", '$HOME'] }
    const script = exportScript(buildQemuCommand(options), {
      options,
      runFolder: '/run/vm',
      title: 'Boot it.',
    })
    expect(script).toMatch(/^#!\/bin\/sh\n# Boot it\.\n/)
    expect(script).toContain('"$ADDCOW" serve --socket /run/vm/nbd.sock /vm/a.add-cow >"$ready" &')
    expect(script).toContain('trap clean_up EXIT')
    expect(script).toContain(`  'it'\\''s' '$HOME'\nexit $?\n`)
    expect(script).toContain('rmdir "$run_folder"')
  })

  it('keeps a title with a newline (a file name) inside its comment', () => {
    const options: QemuCommandOptions = { disk: nbd }
    const script = exportScript(buildQemuCommand(options), {
      options,
      title: 'Boot /vm/a\nrm -rf ~.add-cow.',
    })
    expect(script.split('\n')[1]).toBe('# Boot /vm/a\\u000arm -rf ~.add-cow.')
  })

  it('without an export (a flattened raw file) only runs QEMU', () => {
    const options: QemuCommandOptions = { disk: { via: 'raw', path: '/vm/a.raw' } }
    const script = exportScript(buildQemuCommand(options), { options, title: 'Raw.' })
    expect(script).not.toContain('serve')
    expect(script).not.toContain('trap')
  })
})

describe('libvirtDomainXml', () => {
  it('escapes what it quotes', () => {
    const xml = libvirtDomainXml({
      disk: { ...nbd, socket: "/run/a'b&c.sock" },
      name: 'vm<1>',
      boot: { kind: 'kernel', kernel: '/k', cmdline: 'a="b" & c' },
      extraArgs: ['-device', "x,y='z'"],
    })
    expect(xml).toContain("socket='/run/a&apos;b&amp;c.sock'")
    expect(xml).toContain('<name>vm&lt;1&gt;</name>')
    expect(xml).toContain('<cmdline>a=&quot;b&quot; &amp; c</cmdline>')
    expect(xml).toContain("<qemu:arg value='x,y=&apos;z&apos;'/>")
  })

  it('refuses add-cow natively and TLS with pre-shared keys, which libvirt cannot express', () => {
    expect(() => libvirtDomainXml({ disk: { via: 'native', path: '/vm/a.add-cow' } })).toThrow(
      /no add-cow driver/,
    )
    expect(() =>
      libvirtDomainXml({
        disk: {
          ...nbd,
          socket: undefined,
          host: 'h',
          port: 1,
          tls: { pskFolder: '/p', username: 'u' },
        },
      }),
    ).toThrow(/X\.509 certificates only/)
  })
})
