import { truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { openImage } from '../../../../main/engine/open'
import { writeAddCow } from '../../../helpers/images'
import { tempDir } from '../../../helpers/tools'
import { cleanups, expectFailure, pattern, root, run, useFolders } from '../helpers'

// addcow info (main/cli/commands/info.ts), run in-process: text, JSON, names it does not follow.

useFolders()

describe('addcow info', () => {
  async function overlay(): Promise<void> {
    await pattern(join(root, 'base.raw'), 4 * 65536, 1)
    expect((await run(['create', '-b', 'base.raw', 'vm.add-cow'])).code).toBe(0)
    const disk = await openImage(join(root, 'vm.add-cow'))
    await disk.write(65536, Buffer.alloc(10, 7))
    await disk.close()
  }

  it('describes an overlay in text', async () => {
    await overlay()
    const result = await run(['info', 'vm.add-cow'])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toMatch(
      new RegExp(
        [
          `^image: ${join(root, 'vm.add-cow')}`,
          'file format: add-cow',
          'virtual size: 256 KiB \\(262144 bytes\\)',
          'disk size: .*',
          'cluster_size: 65536',
          `backing file: base.raw \\(actual path: ${join(root, 'base.raw')}\\)`,
          'backing file format: raw',
          `image file: vm.raw \\(actual path: ${join(root, 'vm.raw')}\\)`,
          'image file format: raw',
          'allocated: 1 of 4 clusters \\(25.0%\\)\n$',
        ].join('\n'),
      ),
    )
  })

  it('--json uses qemu-img key names; with --backing-chain it is an array', async () => {
    await overlay()
    const single = await run(['info', '--json', 'vm.add-cow'])
    expect(single.code).toBe(0)
    const info = JSON.parse(single.stdout) as Record<string, unknown>
    expect(info).toMatchObject({
      filename: join(root, 'vm.add-cow'),
      format: 'add-cow',
      'virtual-size': 262144,
      'cluster-size': 65536,
      'backing-filename': 'base.raw',
      'full-backing-filename': join(root, 'base.raw'),
      'backing-filename-format': 'raw',
      'allocated-clusters': 1,
      'total-clusters': 4,
    })
    expect(typeof info['actual-size']).toBe('number')
    const chain = await run(['info', '--json', '--backing-chain', 'vm.add-cow'])
    const layers = JSON.parse(chain.stdout) as { format: string; filename: string }[]
    expect(layers.map((layer) => [layer.format, layer.filename])).toEqual([
      ['add-cow', join(root, 'vm.add-cow')],
      ['raw', join(root, 'base.raw')],
    ])
    const text = await run(['info', '--backing-chain', 'vm.add-cow'])
    expect(text.stdout.split('\n\n').map((block) => block.split('\n')[0])).toEqual([
      `image: ${join(root, 'vm.add-cow')}`,
      `image: ${join(root, 'base.raw')}`,
    ])
  })

  it('-f names the format instead of probing', async () => {
    await overlay()
    const raw = JSON.parse((await run(['info', '--json', '-f', 'raw', 'vm.add-cow'])).stdout) as {
      format: string
      'virtual-size': number
    }
    expect(raw.format).toBe('raw')
    expect(raw['virtual-size']).toBe(131072)
    expectFailure(
      await run(['info', '-f', 'add-cow', 'base.raw']),
      1,
      'info',
      'is not a add-cow file',
    )
    expectFailure(await run(['info', '-f', 'vhdx9', 'base.raw']), 1, 'info', "Format 'vhdx9'")
  })

  it('shows refused names without following them; --allow-name / --allow-any-name follow them', async () => {
    const outside = await tempDir()
    cleanups.push(outside.cleanup)
    await pattern(join(outside.path, 'far.raw'), 8192, 4)
    const otherData = await tempDir('addcow-data-')
    cleanups.push(otherData.cleanup)
    expect((await run(['create', '-b', join(outside.path, 'far.raw'), 'vm.add-cow'])).code).toBe(0)
    const refused = await run(['info', '--backing-chain', 'vm.add-cow'], {
      dataDir: otherData.path,
    })
    expect(refused.code, refused.stderr).toBe(0)
    expect(refused.stdout).toContain(
      `backing file: ${join(outside.path, 'far.raw')} (actual path: ${join(outside.path, 'far.raw')}; NOT FOLLOWED: outside-folder)`,
    )
    expect(refused.stdout).toContain(
      `warning: the name '${join(outside.path, 'far.raw')}' would not be followed (outside-folder)`,
    )
    expect(refused.stdout.split('\n\n')).toHaveLength(1)
    const json = JSON.parse(
      (await run(['info', '--json', 'vm.add-cow'], { dataDir: otherData.path })).stdout,
    ) as { names: { reason: string; followed: boolean }[] }
    expect(json.names.map((name) => [name.reason, name.followed])).toEqual([
      ['outside-folder', false],
      ['inside-folder', true],
    ])
    for (const flags of [['--allow-name', join(outside.path, 'far.raw')], ['--allow-any-name']]) {
      const allowed = await run(['info', '--backing-chain', ...flags, 'vm.add-cow'], {
        dataDir: otherData.path,
      })
      expect(allowed.stdout.split('\n\n')).toHaveLength(2)
      expect(allowed.stdout).not.toContain('NOT FOLLOWED')
    }
    // The library of the run that created it trusts the pair.
    const trusted = JSON.parse((await run(['info', '--json', 'vm.add-cow'])).stdout) as {
      names: { reason: string }[]
    }
    expect(trusted.names[0]?.reason).toBe('trusted-in-library')
  })

  it('reports errors on stderr with exit 1', async () => {
    expectFailure(await run(['info']), 1, 'info', 'Expected one IMAGE')
    expectFailure(await run(['info', '--jsn', 'x']), 1, 'info', "Unknown option '--jsn'")
    expectFailure(
      await run(['info', 'missing.add-cow']),
      1,
      'info',
      join(root, 'missing.add-cow'),
      'no such file',
    )
    await writeFile(
      join(root, 'bad.add-cow'),
      Buffer.concat([Buffer.from('ACOW'), Buffer.alloc(100)]),
    )
    expectFailure(
      await run(['info', 'bad.add-cow']),
      1,
      'info',
      'cluster_bits 0',
      join(root, 'bad.add-cow'),
    )
  })
})

describe('a flattened add-cow file cut to its header (issue 13)', () => {
  it('is refused by info, map and compare, naming the file length', async () => {
    expect((await run(['create', '-s', '1M', 'flat.add-cow'])).code).toBe(0)
    await pattern(join(root, 'other.raw'), 1024 * 1024, 0)
    await truncate(join(root, 'flat.add-cow'), 65536)
    // compare's exit code for an error is 2, as qemu-img compare's.
    for (const [exit, command, ...args] of [
      [1, 'info', 'flat.add-cow'],
      [1, 'map', 'flat.add-cow'],
      [2, 'compare', 'flat.add-cow', 'other.raw'],
    ] as const) {
      expectFailure(
        await run([command, ...args]),
        exit,
        command,
        'flat.add-cow is 65536 bytes long, too short for the bitmap',
      )
    }
  })
})

describe('an image file that is the add-cow file itself, or its base (issue 13)', () => {
  it('info exits 0 and shows the names and why they are not followed; check and map refuse', async () => {
    await pattern(join(root, 'same.raw'), 8192, 1)
    await writeAddCow({
      path: join(root, 'same.add-cow'),
      imageName: 'same.raw',
      backingName: 'same.raw',
      size: 8192,
      clusterBits: 12,
    })
    await writeAddCow({
      path: join(root, 'self.add-cow'),
      imageName: 'self.add-cow',
      size: 8192,
      clusterBits: 12,
    })

    const same = await run(['info', 'same.add-cow'])
    expect(same.code).toBe(0)
    expect(same.stderr).toBe('')
    expect(same.stdout).toContain(
      `image file: same.raw (actual path: ${join(root, 'same.raw')}; NOT FOLLOWED: same-file)`,
    )
    const sameJson = JSON.parse((await run(['info', '--json', 'same.add-cow'])).stdout) as {
      names: { stored: string; followed: boolean; reason: string }[]
    }
    expect(sameJson.names.map((name) => [name.stored, name.followed, name.reason])).toEqual([
      ['same.raw', true, 'inside-folder'],
      ['same.raw', false, 'same-file'],
    ])

    const self = await run(['info', '--json', 'self.add-cow'])
    expect(self.code).toBe(0)
    const selfJson = JSON.parse(self.stdout) as {
      'virtual-size': number
      names: { stored: string; followed: boolean; reason: string }[]
    }
    expect(selfJson.names).toEqual([
      {
        stored: 'self.add-cow',
        resolved: join(root, 'self.add-cow'),
        format: 'raw',
        followed: false,
        reason: 'self',
      },
    ])
    // Measured with stat, never opened as an image file.
    expect(selfJson['virtual-size']).toBe(8192)

    // check still reports both as errors; map and compare still refuse them.
    for (const file of ['same.add-cow', 'self.add-cow']) {
      const checked = await run(['check', file])
      expect(checked.code).toBe(2)
      expect(checked.stdout).toContain('[same-file]')
      expectFailure(await run(['map', file]), 1, 'map', join(root, file))
    }
  })
})
