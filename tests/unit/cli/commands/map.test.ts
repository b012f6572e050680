import { truncate } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { openImage } from '../../../../main/engine/open'
import { nativeStatus } from '../../../../main/engine/native/index'
import { tempDir } from '../../../helpers/tools'
import { cleanups, expectFailure, pattern, root, run, useFolders } from '../helpers'

// addcow map (main/cli/commands/map.ts), run in-process: text and qemu-img map JSON.

useFolders()

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
      'Offset              Length              Depth  Reads as  Source',
      `0x0000000000000000  64 KiB              1      data      ${join(root, 'base.raw')}`,
      `0x0000000000010000  64 KiB              0      data      ${join(root, 'vm.add-cow')}`,
      '0x0000000000020000  128 KiB             0      zeros     (unallocated)',
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

  it("tells a base's holes from its data, with exact lengths", async () => {
    // A sparse base with 4 KiB of data at its start: the rest of it is a hole, read as zeros
    // from the same file; its length (8 MiB less 4 KiB) is printed exactly, not rounded.
    await pattern(join(root, 'base.raw'), 4096, 2)
    await truncate(join(root, 'base.raw'), 8 * 1024 * 1024)
    expect((await run(['create', '-b', 'base.raw', 'vm.add-cow'])).code).toBe(0)
    const text = await run(['map', 'vm.add-cow'])
    expect(text.code, text.stderr).toBe(0)
    const base = join(root, 'base.raw')
    const holes = nativeStatus().features?.seekData ?? false
    expect(text.stdout.split('\n')).toEqual(
      holes
        ? [
            'Offset              Length              Depth  Reads as  Source',
            `0x0000000000000000  4 KiB               1      data      ${base}`,
            `0x0000000000001000  8188 KiB            1      zeros     ${base}`,
            '',
          ]
        : [
            'Offset              Length              Depth  Reads as  Source',
            `0x0000000000000000  8 MiB               1      data      ${base}`,
            '',
          ],
    )
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
      await run(['map', '--outptu=json', 'vm.add-cow']),
      1,
      'map',
      "Unknown option '--outptu'; did you mean '--output'?",
    )
  })
})
