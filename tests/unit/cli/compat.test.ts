import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { editDistance, closestMatch } from '../../../main/cli/suggest'
import { expectFailure, header, overlayOnBase, pattern, root, run, useFolders } from './helpers'

// qemu-img's spellings beside ours (issue 16): --output=json, create -f/-o/trailing SIZE, unknown
// options that point to ours, typos of commands and options, and errors as JSON under --json.

useFolders()

describe('qemu-img spellings', () => {
  it('--output=json, --output json and --json print the same; --output=human is the text', async () => {
    await overlayOnBase()
    const ours = await run(['info', '--json', 'vm.add-cow'])
    expect(ours.code, ours.stderr).toBe(0)
    expect(JSON.parse(ours.stdout)).toMatchObject({ format: 'add-cow', 'virtual-size': 1048576 })
    expect(await run(['info', '--output=json', 'vm.add-cow'])).toEqual(ours)
    expect(await run(['info', '--output', 'json', 'vm.add-cow'])).toEqual(ours)
    const text = await run(['info', 'vm.add-cow'])
    expect(text.stdout).toContain('file format: add-cow')
    expect(await run(['info', '--output=human', 'vm.add-cow'])).toEqual(text)
    expectFailure(await run(['info', '--output=yaml', 'vm.add-cow']), 1, 'info', "'yaml'", 'json')
  })

  it('create -f add-cow -o backing_file=…,backing_fmt=…,image_file=…,cluster_size=… OVERLAY SIZE', async () => {
    await pattern(join(root, 'base.raw'), 65536, 7)
    const result = await run([
      'create',
      '-f',
      'add-cow',
      '-o',
      'backing_file=base.raw,backing_fmt=raw,image_file=data.img,cluster_size=4096',
      'ov.add-cow',
      '2M',
    ])
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('size=2097152 (2 MiB) cluster_size=4096, backing_file=base.raw')
    expect(await header(join(root, 'ov.add-cow'))).toMatchObject({
      backingName: 'base.raw',
      backingFormat: 'raw',
      imageName: 'data.img',
      clusterBits: 12,
    })
    // A comma inside a name is doubled, as in qemu-img.
    const comma = await run(['create', '-o', 'image_file=a,,b.raw', 'c.add-cow', '1M'])
    expect(comma.code, comma.stderr).toBe(0)
    expect((await header(join(root, 'c.add-cow'))).imageName).toBe('a,b.raw')
  })

  it('refuses another format, unknown -o keys (with a suggestion) and settings given twice that differ', async () => {
    expectFailure(
      await run(['create', '-f', 'qcow2', 'x.add-cow', '1M']),
      1,
      'create',
      "not 'qcow2'",
    )
    expectFailure(
      await run(['create', '-o', 'cluster_sise=4K', 'x.add-cow', '1M']),
      1,
      'create',
      "did you mean 'cluster_size'?",
    )
    expectFailure(
      await run(['create', '-s', '1M', 'x.add-cow', '2M']),
      1,
      'create',
      "-s '1M' and the trailing SIZE '2M'",
    )
    // The same value twice is fine, however it is written.
    const same = await run(['create', '-s', '1M', '-o', 'size=1024K', 'x.add-cow', '1048576'])
    expect(same.code, same.stderr).toBe(0)
    const help = await run(['create', '-o', 'help', 'y.add-cow'])
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('cluster_size=SIZE')
  })
})

describe('unknown options and commands', () => {
  it('point to ours: --size to -s, --cluster-size to -c, --jsno to --json, -F for -f', async () => {
    expectFailure(
      await run(['create', '--size', '1M', 'x.add-cow']),
      1,
      'create',
      "Unknown option '--size'; did you mean '-s'?",
      "Try 'addcow help create'",
    )
    expectFailure(
      await run(['create', '--cluster-size=4K', 'x.add-cow']),
      1,
      'create',
      "did you mean '-c'?",
    )
    expectFailure(await run(['info', '--jsno', 'x']), 1, 'info', "did you mean '--json'?")
    expectFailure(await run(['map', '-j', 'x']), 1, 'map', "did you mean '--json'?")
    expectFailure(await run(['map', '-F', 'raw', 'x']), 1, 'map', "did you mean '-f'?")
    // Nothing close: no guess.
    const far = await run(['info', '--frobnicate', 'x'])
    expect(far.stderr).toBe("addcow info: Unknown option '--frobnicate'. Try 'addcow help info'.\n")
  })

  it('a typo of a command gets a suggestion', async () => {
    const result = await run(['comit', 'x'])
    expect(result.code).toBe(1)
    expect(result.stderr).toBe(
      "addcow: unknown command 'comit'. Did you mean 'commit'? Run 'addcow help' for the list.\n",
    )
    expect((await run(['help', 'infi'])).stderr).toContain("Did you mean 'info'?")
  })

  it('edit distance counts a swap of neighbours as one edit', () => {
    expect(editDistance('commit', 'comimt')).toBe(1)
    expect(editDistance('', 'abc')).toBe(3)
    expect(closestMatch('srteam', ['stream', 'serve'])).toBe('stream')
    expect(closestMatch('xyz', ['stream', 'serve'])).toBeUndefined()
  })
})

describe('errors under --json', () => {
  it('check --json on a missing file prints a JSON error object on stdout, the sentence on stderr, exit 1', async () => {
    for (const spelling of [['--json'], ['--output=json'], ['--output', 'json']]) {
      const result = await run(['check', ...spelling, 'missing.add-cow'])
      expect(result.code).toBe(1)
      const parsed = JSON.parse(result.stdout) as { error: Record<string, unknown> }
      expect(parsed.error).toMatchObject({ code: 'NOT_FOUND', path: join(root, 'missing.add-cow') })
      expect(parsed.error.message).toMatch(/missing\.add-cow/)
      expect(result.stderr).toBe(`addcow check: ${String(parsed.error.message)}\n`)
    }
    // An argv that does not parse is a JSON error too.
    const bad = await run(['map', '--json', '--nope', 'x'])
    expect(JSON.parse(bad.stdout)).toMatchObject({
      error: { code: 'BAD_ARGUMENT', value: '--nope' },
    })
    // Without --json, stdout stays empty.
    expectFailure(await run(['check', 'missing.add-cow']), 1, 'check', 'missing.add-cow')
  })
})

describe('create -b with a relative name from another folder', () => {
  it('says the name is resolved from the overlay folder, and which name reaches the file', async () => {
    await writeFile(join(root, 'base.raw'), Buffer.alloc(65536))
    const { mkdir } = await import('node:fs/promises')
    await mkdir(join(root, 'sub'))
    expectFailure(
      await run(['create', '-b', 'base.raw', 'sub/ov.add-cow']),
      1,
      'create',
      `resolved from the overlay's folder (${join(root, 'sub')})`,
      "name it '../base.raw'",
    )
  })
})

describe('info: what the files are', () => {
  it('a file named .add-cow without the add-cow header is shown as raw, with a warning saying so', async () => {
    await writeFile(join(root, 'fake.add-cow'), Buffer.alloc(65536, 0x20))
    const text = await run(['info', 'fake.add-cow'])
    expect(text.code, text.stderr).toBe(0)
    expect(text.stdout).toContain('file format: raw')
    expect(text.stdout).toContain(
      `warning: ${join(root, 'fake.add-cow')} is named like an add-cow image but has no add-cow header (its first bytes are 20 20 20 20 20 20 20 20); it is read as raw.`,
    )
    const json = JSON.parse((await run(['info', '--json', 'fake.add-cow'])).stdout) as {
      warnings?: string[]
    }
    expect(json.warnings?.[0]).toMatch(/has no add-cow header/)
    // Given the format, or named otherwise, a raw file is just raw.
    expect((await run(['info', '-f', 'raw', 'fake.add-cow'])).stdout).not.toContain('warning')
    await writeFile(join(root, 'disk.img'), Buffer.alloc(65536, 0x20))
    expect((await run(['info', 'disk.img'])).stdout).not.toContain('warning')
  })

  it("an overlay's disk size says it adds both files, and shows each", async () => {
    await overlayOnBase()
    await writeFile(join(root, 'vm.raw'), Buffer.alloc(1024 * 1024, 3))
    const text = await run(['info', 'vm.add-cow'])
    const info = JSON.parse((await run(['info', '--json', 'vm.add-cow'])).stdout) as Record<
      string,
      number
    >
    const own = info['actual-size']! - info['data-file-actual-size']!
    expect(own).toBeGreaterThan(0)
    expect(text.stdout).toMatch(
      /\ndisk size: [\d.]+ \w+ \(both files: [\d.]+ \w+ add-cow file \+ 1 MiB image file\)\n/,
    )
  })
})
