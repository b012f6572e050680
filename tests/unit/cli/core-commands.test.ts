import { mkdir, readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { parseHeader } from '../../../main/engine/formats/add-cow/header'
import { openImage } from '../../../main/engine/open'
import { nativeStatus } from '../../../main/engine/native/index'
import { addcow } from '../../helpers/cli'
import { tempDir } from '../../helpers/tools'

// The four core commands of the CLI contract (DESIGN.md), run as the built binary
// (npm run build:cli), one flag at a time, with their output, errors and exit codes.

// Each test spawns the CLI several times; on a busy machine that takes a while.
vi.setConfig({ testTimeout: 120_000 })

let root: string
let dataDir: string
let cleanups: (() => Promise<void>)[] = []

beforeEach(async () => {
  const work = await tempDir()
  const data = await tempDir('addcow-data-')
  root = work.path
  dataDir = data.path
  cleanups = [work.cleanup, data.cleanup]
})

afterEach(async () => {
  for (const cleanup of cleanups) await cleanup()
})

function run(args: string[], options: { cwd?: string; dataDir?: string } = {}) {
  return addcow(args, { cwd: options.cwd ?? root, dataDir: options.dataDir ?? dataDir })
}

/** Expect a failure with `code`, one line on stderr starting "addcow COMMAND: ", nothing on stdout. */
function expectFailure(
  result: { code: number; stdout: string; stderr: string },
  code: number,
  command: string,
  ...parts: string[]
) {
  expect(result.code, result.stderr).toBe(code)
  expect(result.stdout).toBe('')
  expect(result.stderr).toMatch(new RegExp(`^addcow ${command}: [^\\n]+\\.\\n$`))
  for (const part of parts) expect(result.stderr).toContain(part)
}

async function pattern(path: string, size: number, value: number): Promise<void> {
  await writeFile(path, Buffer.alloc(size, value))
}

async function header(path: string) {
  return parseHeader(await readFile(path), path).header
}

describe('addcow (no command), help and version', () => {
  it('prints the command list, usage of one command, and the version', async () => {
    const bare = await run([])
    expect(bare.code).toBe(1)
    expect(bare.stdout).toContain('Usage: addcow COMMAND')
    for (const name of ['create', 'info', 'map', 'compare'])
      expect(bare.stdout).toMatch(new RegExp(`\\n  ${name} +\\S`))
    const help = await run(['help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toBe(bare.stdout)
    const usage = await run(['help', 'create'])
    expect(usage.code).toBe(0)
    expect(usage.stdout).toContain(
      'Usage: addcow create [-b BASE] [-F BASE_FMT] [-i IMAGE_FILE] [-s SIZE] [-c CLUSTER_SIZE] OVERLAY',
    )
    for (const flag of ['info', 'map', 'compare']) {
      const result = await run([flag, '--help'])
      expect(result.code).toBe(0)
      expect(result.stdout).toMatch(new RegExp(`^Usage: addcow ${flag} `))
    }
    expect((await run(['create', '-h'])).stdout).toContain('--allow-any-name')
    const version = await run(['--version'])
    expect(version).toEqual({ code: 0, stdout: 'addcow 0.1.0\n', stderr: '' })
    const unknown = await run(['frobnicate'])
    expect(unknown.code).toBe(1)
    expect(unknown.stderr).toBe(
      "addcow: unknown command 'frobnicate'. Run 'addcow help' for the list.\n",
    )
    expect((await run(['help', 'frobnicate'])).code).toBe(1)
  })
})

describe('addcow create', () => {
  it('creates an overlay on a base: sized from the base, names stored as given, base format probed', async () => {
    await pattern(join(root, 'base.raw'), 3 * 65536 + 512, 1)
    const result = await run(['create', '-b', 'base.raw', 'vm.add-cow'])
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    expect(result.stdout).toBe(
      `Formatting 'vm.add-cow', fmt=add-cow size=197120 (193 KiB) cluster_size=65536, backing_file=base.raw, backing_fmt=raw, image_file=${join(root, 'vm.raw')}\n`,
    )
    expect(await header(join(root, 'vm.add-cow'))).toMatchObject({
      backingName: 'base.raw',
      backingFormat: 'raw',
      imageName: 'vm.raw',
      clusterBits: 16,
    })
    const image = await stat(join(root, 'vm.raw'))
    expect([image.size, image.blocks]).toEqual([197120, 0])
    // The library trusts what the user named, so the overlay opens anywhere later.
    const library = JSON.parse(await readFile(join(dataDir, 'library.json'), 'utf8')) as {
      trusted: { from: string; to: string }[]
      images: { path: string }[]
    }
    expect(library.trusted.map((pair) => pair.to).sort()).toEqual([
      join(root, 'base.raw'),
      join(root, 'vm.raw'),
    ])
    expect(library.images.map((entry) => entry.path)).toEqual([join(root, 'vm.add-cow')])
  })

  it('-F, -i, -s and -c', async () => {
    await mkdir(join(root, 'data'))
    await pattern(join(root, 'base.raw'), 65536, 1)
    const result = await run([
      'create',
      '-b',
      'base.raw',
      '-F',
      'raw',
      '-i',
      'data/disk.img',
      '-s',
      '1M',
      '-c',
      '4K',
      'vm.add-cow',
    ])
    expect(result.code, result.stderr).toBe(0)
    expect(result.stdout).toContain('size=1048576 (1 MiB) cluster_size=4096')
    expect(result.stdout).toContain(`image_file=${join(root, 'data', 'disk.img')}\n`)
    expect(await header(join(root, 'vm.add-cow'))).toMatchObject({
      imageName: 'data/disk.img',
      clusterBits: 12,
      headerSize: 4096,
    })
    expect((await stat(join(root, 'data', 'disk.img'))).size).toBe(1048576)
    // -c 2M, no base: -s is required, ALL_ALLOCATED is set.
    const solo = await run(['create', '-s', '10M', '-c', '2M', 'solo.add-cow'])
    expect(solo.code, solo.stderr).toBe(0)
    expect(solo.stdout).toBe(
      `Formatting 'solo.add-cow', fmt=add-cow size=10485760 (10 MiB) cluster_size=2097152, image_file=${join(root, 'solo.raw')}\n`,
    )
    expect(await header(join(root, 'solo.add-cow'))).toMatchObject({
      compatibleFeatures: 1n,
      backingName: null,
    })
  })

  it('keeps an existing image file and never shrinks it', async () => {
    await pattern(join(root, 'base.raw'), 65536, 1)
    await pattern(join(root, 'old.raw'), 131072, 2)
    const kept = await run(['create', '-b', 'base.raw', '-i', 'old.raw', 'a.add-cow'])
    expect(kept.code).toBe(0)
    expect(kept.stdout).toContain('size=131072')
    expect(kept.stdout).toContain(`image_file=${join(root, 'old.raw')} (existing)\n`)
    expectFailure(
      await run(['create', '-b', 'base.raw', '-i', 'old.raw', '-s', '64K', 'b.add-cow']),
      1,
      'create',
      'refusing to shrink it',
      '131072',
    )
    expect((await stat(join(root, 'old.raw'))).size).toBe(131072)
  })

  it('resolves a relative base against the overlay folder, not the working directory', async () => {
    await mkdir(join(root, 'vm'))
    await pattern(join(root, 'vm', 'base.raw'), 8192, 3)
    const result = await run(['create', '-b', 'base.raw', 'vm/disk.add-cow'])
    expect(result.code, result.stderr).toBe(0)
    expect(await header(join(root, 'vm', 'disk.add-cow'))).toMatchObject({
      backingName: 'base.raw',
      imageName: 'disk.raw',
    })
    const disk = await openImage(join(root, 'vm', 'disk.add-cow'), { readOnly: true })
    expect(disk.backing?.path).toBe(join(root, 'vm', 'base.raw'))
    await disk.close()
  })

  it('--allow-name and --allow-any-name for names in the base chain', async () => {
    const outside = await tempDir()
    cleanups.push(outside.cleanup)
    await pattern(join(outside.path, 'far.raw'), 8192, 4)
    // mid.add-cow names a base outside its folder; a fresh library does not trust the pair.
    expect((await run(['create', '-b', join(outside.path, 'far.raw'), 'mid.add-cow'])).code).toBe(0)
    const otherData = await tempDir('addcow-data-')
    cleanups.push(otherData.cleanup)
    expectFailure(
      await run(['create', '-b', 'mid.add-cow', 'top.add-cow'], { dataDir: otherData.path }),
      1,
      'create',
      '--allow-name',
      join(outside.path, 'far.raw'),
    )
    const named = await run(
      ['create', '-b', 'mid.add-cow', '--allow-name', join(outside.path, 'far.raw'), 'top.add-cow'],
      { dataDir: otherData.path },
    )
    expect(named.code, named.stderr).toBe(0)
    expect(named.stdout).toContain('backing_fmt=add-cow')
    const any = await run(['create', '-b', 'mid.add-cow', '--allow-any-name', 'top2.add-cow'], {
      dataDir: otherData.path,
    })
    expect(any.code, any.stderr).toBe(0)
    // With the library that recorded the pair when mid was created, no flag is needed.
    expect((await run(['create', '-b', 'mid.add-cow', 'top3.add-cow'])).code).toBe(0)
  })

  it('reports bad input on stderr with exit 1', async () => {
    await pattern(join(root, 'base.raw'), 8192, 1)
    expectFailure(
      await run(['create']),
      1,
      'create',
      'Expected one OVERLAY; got 0 arguments',
      "Try 'addcow help create'",
    )
    expectFailure(await run(['create', 'a.add-cow', 'b.add-cow']), 1, 'create', 'got 2 arguments')
    expectFailure(await run(['create', '-x', 'a.add-cow']), 1, 'create', "Unknown option '-x'")
    expectFailure(
      await run(['create', '-s', '12Q', 'a.add-cow']),
      1,
      'create',
      "The size '12Q' is not a size",
    )
    expectFailure(
      await run(['create', '-s', '1E', 'a.add-cow']),
      1,
      'create',
      "The size '1E' is more than this tool can address",
    )
    expectFailure(
      await run(['create', '-s', '1M', '-c', '3K', 'a.add-cow']),
      1,
      'create',
      'Cluster size 3072 is not a power of two',
    )
    expectFailure(
      await run(['create', '-s', '1M', '-c', '4M', 'a.add-cow']),
      1,
      'create',
      'between 4 KiB and 2 MiB',
    )
    expectFailure(await run(['create', 'a.add-cow']), 1, 'create', 'A size (-s) is needed')
    expectFailure(
      await run(['create', '-F', 'raw', '-s', '1M', 'a.add-cow']),
      1,
      'create',
      'needs a backing file (-b)',
    )
    expectFailure(
      await run(['create', '-b', 'base.raw', '-F', 'add-cow', 'a.add-cow']),
      1,
      'create',
      'is not a add-cow file',
    )
    expectFailure(
      await run(['create', '-b', 'nope.raw', 'a.add-cow']),
      1,
      'create',
      join(root, 'nope.raw'),
      'no such file',
    )
    expectFailure(
      await run(['create', '-b', 'base.raw', '-i', 'base.raw', 'a.add-cow']),
      1,
      'create',
      'are the same file',
    )
    expect((await run(['create', '-s', '1M', 'a.add-cow'])).code).toBe(0)
    expectFailure(await run(['create', '-s', '1M', 'a.add-cow']), 1, 'create', 'already exists')
  })
})

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

describe('addcow map', () => {
  it('prints extents as text and as qemu-img map JSON', async () => {
    await pattern(join(root, 'base.raw'), 2 * 65536, 1)
    expect((await run(['create', '-b', 'base.raw', '-s', '256K', 'vm.add-cow'])).code).toBe(0)
    const disk = await openImage(join(root, 'vm.add-cow'))
    await disk.write(65536, Buffer.alloc(65536, 9))
    await disk.close()
    const json = await run(['map', '--json', 'vm.add-cow'])
    expect(json.code, json.stderr).toBe(0)
    expect(JSON.parse(json.stdout)).toEqual([
      { start: 0, length: 65536, depth: 1, present: true, zero: false, data: true },
      { start: 65536, length: 65536, depth: 0, present: true, zero: false, data: true },
      { start: 131072, length: 131072, depth: 0, present: false, zero: true, data: false },
    ])
    const text = await run(['map', 'vm.add-cow'])
    expect(text.stdout.split('\n')).toEqual([
      'Offset              Length              Depth  Source',
      `0x0000000000000000  64 KiB              1      ${join(root, 'base.raw')}`,
      `0x0000000000010000  64 KiB              0      ${join(root, 'vm.add-cow')}`,
      '0x0000000000020000  128 KiB             0      (zeros)',
      '',
    ])
    const raw = JSON.parse((await run(['map', '--json', '-f', 'raw', 'vm.add-cow'])).stdout) as {
      start: number
      length: number
      depth: number
      present: boolean
      zero: boolean
    }[]
    // As raw, the add-cow file is one present layer: its header is data, and where holes can
    // be listed (the native addon), the unwritten part of its bitmap area is a zero hole.
    expect(raw[0]).toMatchObject({ start: 0, depth: 0, present: true, zero: false })
    expect(raw.every((extent) => extent.depth === 0 && extent.present)).toBe(true)
    expect(raw.reduce((sum, extent) => sum + extent.length, 0)).toBe(131072)
    expect(raw.some((extent) => extent.zero)).toBe(nativeStatus().features?.seekData ?? false)
  })

  it('follows only allowed names, and reports errors with exit 1', async () => {
    const outside = await tempDir()
    cleanups.push(outside.cleanup)
    await pattern(join(outside.path, 'far.raw'), 8192, 4)
    const otherData = await tempDir('addcow-data-')
    cleanups.push(otherData.cleanup)
    expect((await run(['create', '-b', join(outside.path, 'far.raw'), 'vm.add-cow'])).code).toBe(0)
    expectFailure(
      await run(['map', 'vm.add-cow'], { dataDir: otherData.path }),
      1,
      'map',
      'Refusing to open the backing file',
      '--allow-name',
    )
    expect(
      (
        await run(['map', '--allow-name', join(outside.path, 'far.raw'), 'vm.add-cow'], {
          dataDir: otherData.path,
        })
      ).code,
    ).toBe(0)
    expect(
      (await run(['map', '--allow-any-name', '--json', 'vm.add-cow'], { dataDir: otherData.path }))
        .code,
    ).toBe(0)
    expectFailure(await run(['map']), 1, 'map', 'Expected one IMAGE')
    expectFailure(await run(['map', 'a', 'b']), 1, 'map', 'got 2 arguments')
    expectFailure(
      await run(['map', '--output=json', 'vm.add-cow']),
      1,
      'map',
      "Unknown option '--output'",
    )
  })
})

describe('addcow compare', () => {
  beforeEach(async () => {
    await pattern(join(root, 'a.raw'), 65536, 5)
    await pattern(join(root, 'b.raw'), 65536, 5)
    const longer = Buffer.alloc(131072)
    longer.fill(5, 0, 65536)
    await writeFile(join(root, 'longer.raw'), longer)
    const different = Buffer.alloc(65536, 5)
    different[4097] = 6
    await writeFile(join(root, 'different.raw'), different)
  })

  it('exits 0 when the guest views match, also when the larger one ends in zeros', async () => {
    expect(await run(['compare', 'a.raw', 'b.raw'])).toEqual({
      code: 0,
      stdout: 'Images are identical.\n',
      stderr: '',
    })
    expect(await run(['compare', 'a.raw', 'longer.raw'])).toEqual({
      code: 0,
      stdout: 'Images are identical (the larger one ends in zeros).\n',
      stderr: '',
    })
    expect((await run(['create', '-b', 'a.raw', 'ov.add-cow'])).code).toBe(0)
    expect((await run(['compare', 'ov.add-cow', 'b.raw'])).code).toBe(0)
  })

  it('exits 1 at the first difference', async () => {
    expect(await run(['compare', 'a.raw', 'different.raw'])).toEqual({
      code: 1,
      stdout: 'Content mismatch at offset 4097!\n',
      stderr: '',
    })
    const tail = Buffer.alloc(131072)
    tail.fill(5, 0, 65536)
    tail[100000] = 1
    await writeFile(join(root, 'tail.raw'), tail)
    expect((await run(['compare', 'tail.raw', 'a.raw'])).stdout).toBe(
      'Content mismatch at offset 100000!\n',
    )
  })

  it('-f and -F name the formats', async () => {
    expect((await run(['create', '-b', 'a.raw', 'ov.add-cow'])).code).toBe(0)
    // Read as raw, the add-cow file is its header: not the guest view.
    expect((await run(['compare', '-f', 'raw', 'ov.add-cow', 'a.raw'])).code).toBe(1)
    expect((await run(['compare', '-F', 'add-cow', 'a.raw', 'ov.add-cow'])).code).toBe(0)
    expect((await run(['compare', '-f', 'add-cow', '-F', 'raw', 'ov.add-cow', 'a.raw'])).code).toBe(
      0,
    )
  })

  it('--allow-name / --allow-any-name let it read through names outside the folder', async () => {
    const outside = await tempDir()
    cleanups.push(outside.cleanup)
    await pattern(join(outside.path, 'far.raw'), 65536, 5)
    const otherData = await tempDir('addcow-data-')
    cleanups.push(otherData.cleanup)
    expect((await run(['create', '-b', join(outside.path, 'far.raw'), 'ov.add-cow'])).code).toBe(0)
    const refused = await run(['compare', 'ov.add-cow', 'a.raw'], { dataDir: otherData.path })
    expectFailure(
      refused,
      2,
      'compare',
      'Refusing to open the backing file',
      join(outside.path, 'far.raw'),
    )
    const named = await run(
      ['compare', '--allow-name', join(outside.path, 'far.raw'), 'ov.add-cow', 'a.raw'],
      {
        dataDir: otherData.path,
      },
    )
    expect(named).toEqual({ code: 0, stdout: 'Images are identical.\n', stderr: '' })
    expect(
      (
        await run(['compare', '--allow-any-name', 'ov.add-cow', 'a.raw'], {
          dataDir: otherData.path,
        })
      ).code,
    ).toBe(0)
  })

  it('exits 2 on errors', async () => {
    expectFailure(
      await run(['compare', 'a.raw']),
      2,
      'compare',
      'Expected two images A and B; got 1 argument.',
    )
    expectFailure(await run(['compare', 'a.raw', 'gone.raw']), 2, 'compare', join(root, 'gone.raw'))
    expectFailure(
      await run(['compare', '-q', 'a.raw', 'b.raw']),
      2,
      'compare',
      "Unknown option '-q'",
    )
    expectFailure(
      await run(['compare', '-f', 'add-cow', 'a.raw', 'b.raw']),
      2,
      'compare',
      'is not a add-cow file',
    )
  })
})
