import { mkdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { openImage } from '../../../../main/engine/open'
import { tempDir } from '../../../helpers/tools'
import {
  cleanups,
  dataDir,
  expectFailure,
  header,
  pattern,
  root,
  run,
  useFolders,
} from '../helpers'

// addcow create (main/cli/commands/create.ts), run in-process, one flag at a time, with its
// output, errors and exit codes.

useFolders()

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
