import { open, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { addcow } from '../../helpers/cli'
import { makeSparseRaw, pattern, writeGuest } from '../../helpers/images'
import { requireTools, tempDir, tool, toolStatus } from '../../helpers/tools'

// addcow convert, measure and resize judged by qemu-img (issue 16): the converted files pass
// `qemu-img check` and compare equal to what qemu-img itself makes of the same chain; measure
// gives qemu-img measure's numbers for the same contents; resize shows the guest what
// qemu-img resize shows on a qcow2 overlay of the same base.

const ready = requireTools('qemu-img', 'qemu-io')
const MiB = 1024 * 1024

let dir: string
let dataDir: string
let cleanup: () => Promise<void>

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-convert-'))
  dataDir = join(dir, '.data')
})
afterEach(async () => {
  await cleanup()
})

function run(...args: string[]) {
  return addcow(args, { dataDir, cwd: dir })
}

/** Guest writes into the overlay: inside the base, across its end, past it, and a partial cluster. */
const WRITES: [number, Buffer][] = [
  [1 * MiB + 4096, pattern(4096, 5)],
  [8 * MiB - 10_000, pattern(30_000, 6)],
  [10 * MiB, pattern(MiB + 777, 7)],
]

/**
 * An add-cow overlay (12 MiB) over a qcow2 base (8 MiB) made by qemu-img and qemu-io, and
 * `expected.raw`: the same guest view built by qemu-img alone (the base converted to raw,
 * grown, and the overlay's writes applied to it).
 */
async function chainScene(): Promise<void> {
  await tool('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'base.qcow2'), '8M'])
  await tool('qemu-io', [
    '-f',
    'qcow2',
    '-c',
    'write -P 0x11 0 100k',
    '-c',
    'write -P 0x22 3M 64k',
    '-c',
    'write -z 4M 1M',
    '-c',
    'write -P 0x33 7M 1M',
    join(dir, 'base.qcow2'),
  ])
  const created = await run('create', '-b', 'base.qcow2', '-F', 'qcow2', 'ov.add-cow', '12M')
  expect(created.code, created.stderr).toBe(0)
  await writeGuest(join(dir, 'ov.add-cow'), WRITES)
  await tool('qemu-img', [
    'convert',
    '-f',
    'qcow2',
    '-O',
    'raw',
    join(dir, 'base.qcow2'),
    join(dir, 'expected.raw'),
  ])
  await tool('qemu-img', ['resize', '-q', '-f', 'raw', join(dir, 'expected.raw'), '12M'])
  const handle = await open(join(dir, 'expected.raw'), 'r+')
  try {
    for (const [offset, data] of WRITES) await handle.write(data, 0, data.length, offset)
  } finally {
    await handle.close()
  }
}

async function compare(a: string, formatA: string, b: string, formatB: string) {
  return toolStatus('qemu-img', [
    'compare',
    '-f',
    formatA,
    '-F',
    formatB,
    join(dir, a),
    join(dir, b),
  ])
}

describe.skipIf(!ready)('addcow convert', () => {
  it('writes the chain as standalone raw and qcow2 files that qemu-img checks and finds equal to its own', async () => {
    await chainScene()
    for (const [output, args] of [
      ['out.raw', []],
      ['out.qcow2', ['-O', 'qcow2']],
      ['out4k.qcow2', ['-O', 'qcow2', '-o', 'cluster_size=4K']],
      ['out2m.qcow2', ['-O', 'qcow2', '-o', 'cluster_size=2M']],
    ] as const) {
      const result = await run('convert', ...args, 'ov.add-cow', output)
      expect(result.code, result.stderr).toBe(0)
      expect(result.stdout).toContain(`to ${join(dir, output)}`)
      const format = output.endsWith('.raw') ? 'raw' : 'qcow2'
      if (format === 'qcow2') {
        const check = await toolStatus('qemu-img', ['check', join(dir, output)])
        expect(check.code, check.stdout + check.stderr).toBe(0)
        expect(check.stdout).toContain('No errors were found on the image.')
        const info = JSON.parse(
          await tool('qemu-img', ['info', '--output=json', join(dir, output)]),
        ) as Record<string, unknown>
        expect(info).toMatchObject({ format: 'qcow2', 'virtual-size': 12 * MiB })
        expect(info['backing-filename']).toBeUndefined()
      }
      const same = await compare('expected.raw', 'raw', output, format)
      expect(same.code, same.stdout + same.stderr).toBe(0)
    }
    // The zeros (the base's hole at 4M, the unwritten tail) were not written: qemu-img map shows
    // them unallocated in the qcow2 file, and the raw file is sparse there.
    const map = JSON.parse(
      await tool('qemu-img', ['map', '--output=json', '-f', 'qcow2', join(dir, 'out.qcow2')]),
    ) as { start: number; length: number; data: boolean }[]
    const dataAt = (offset: number) =>
      map.find((extent) => extent.start <= offset && offset < extent.start + extent.length)?.data
    expect([
      dataAt(0),
      dataAt(4 * MiB),
      dataAt(5 * MiB),
      dataAt(7 * MiB),
      dataAt(11 * MiB),
    ]).toEqual([true, false, false, true, true])
    expect((await stat(join(dir, 'out.raw'))).blocks * 512).toBeLessThan(8 * MiB)
  })

  it('refuses an output that is a file of the chain, and an unknown -O, leaving the files as they were', async () => {
    await chainScene()
    const before = await tool('qemu-img', ['info', '--output=json', join(dir, 'base.qcow2')])
    const same = await run('convert', '-O', 'qcow2', 'ov.add-cow', 'base.qcow2')
    expect(same.code).toBe(1)
    expect(same.stderr).toContain('is a file of the image being converted')
    expect(await tool('qemu-img', ['info', '--output=json', join(dir, 'base.qcow2')])).toBe(before)
    const bad = await run('convert', '-O', 'vmdk', 'ov.add-cow', 'x.vmdk')
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain("-O 'vmdk' is not one of raw, qcow2")
  })
})

describe.skipIf(!ready)('addcow measure', () => {
  it('gives qemu-img measure numbers for the same files and sizes', async () => {
    await makeSparseRaw(join(dir, 'sparse.raw'), 20 * MiB + 4096, [
      [0, pattern(100_000, 1)],
      [3 * MiB + 5, pattern(70_000, 2)],
      [19 * MiB, pattern(MiB + 4096, 3)],
    ])
    for (const cluster of ['4K', '64K', '2M']) {
      for (const format of ['raw', 'qcow2']) {
        const options = format === 'qcow2' ? ['-o', `cluster_size=${cluster}`] : []
        const ours = await run('measure', '--output=json', '-O', format, ...options, 'sparse.raw')
        expect(ours.code, ours.stderr).toBe(0)
        const theirs = await tool('qemu-img', [
          'measure',
          '--output=json',
          '-O',
          format,
          ...options,
          '-f',
          'raw',
          join(dir, 'sparse.raw'),
        ])
        const { required, 'fully-allocated': full } = JSON.parse(theirs) as Record<string, number>
        expect(JSON.parse(ours.stdout), `${format} ${cluster}`).toEqual({
          required,
          'fully-allocated': full,
        })
      }
      for (const size of ['1', '1000001', '7G']) {
        const ours = await run(
          'measure',
          '--json',
          '-O',
          'qcow2',
          '-o',
          `cluster_size=${cluster}`,
          '--size',
          size,
        )
        const theirs = await tool('qemu-img', [
          'measure',
          '--output=json',
          '-O',
          'qcow2',
          '-o',
          `cluster_size=${cluster}`,
          '--size',
          size,
        ])
        const { required, 'fully-allocated': full } = JSON.parse(theirs) as Record<string, number>
        expect(JSON.parse(ours.stdout), `--size ${size} ${cluster}`).toEqual({
          required,
          'fully-allocated': full,
        })
      }
    }
  })

  it("measures an overlay's chain as qemu-img measures the qcow2 file convert writes, and bounds it", async () => {
    await chainScene()
    const ours = await run('measure', '-O', 'qcow2', 'ov.add-cow')
    expect(ours.code, ours.stderr).toBe(0)
    expect((await run('convert', '-O', 'qcow2', 'ov.add-cow', 'out.qcow2')).code).toBe(0)
    const theirs = await tool('qemu-img', [
      'measure',
      '-O',
      'qcow2',
      '-f',
      'qcow2',
      join(dir, 'out.qcow2'),
    ])
    expect(theirs.startsWith(ours.stdout), theirs).toBe(true)
    const required = Number(/required size: (\d+)/.exec(ours.stdout)?.[1])
    expect((await stat(join(dir, 'out.qcow2'))).size).toBeLessThanOrEqual(required)
  })
})

describe.skipIf(!ready)('addcow resize', () => {
  it('grows an overlay as qemu-img resize grows a qcow2 overlay of the same base: the base tail stays hidden', async () => {
    await tool('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'base.raw'), '8M'])
    await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x44 0 8M', join(dir, 'base.raw')])
    expect((await run('create', '-b', 'base.raw', 'ov.add-cow', '3149824')).code).toBe(0)
    await tool('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-b',
      'base.raw',
      '-F',
      'raw',
      join(dir, 'peer.qcow2'),
      '3149824',
    ])
    const grown = await run('resize', 'ov.add-cow', '+3M')
    expect(grown.code, grown.stderr).toBe(0)
    expect(grown.stdout).toContain('(6295552 bytes)')
    await tool('qemu-img', ['resize', '-q', '-f', 'qcow2', join(dir, 'peer.qcow2'), '+3M'])
    expect((await run('convert', 'ov.add-cow', 'ours.raw')).code).toBe(0)
    const same = await compare('ours.raw', 'raw', 'peer.qcow2', 'qcow2')
    expect(same.code, same.stdout + same.stderr).toBe(0)
    // The peer agrees because the new area reads zeros (not the base's 0x44); the old size is
    // not a whole cluster, so the cluster it ends in was filled from the base first.
    const zeros = await tool('qemu-io', [
      '-f',
      'raw',
      '-c',
      'read -P 0 3149824 3145728',
      join(dir, 'ours.raw'),
    ])
    expect(zeros).not.toContain('Pattern verification failed')
    expect((await run('check', 'ov.add-cow')).code).toBe(0)
  })

  it('shrinks only with --shrink and only when the part cut off is zeros, as qemu-img resize --shrink then shows', async () => {
    await writeFile(join(dir, 'base.raw'), Buffer.alloc(0))
    await tool('qemu-img', ['resize', '-q', '-f', 'raw', join(dir, 'base.raw'), '4M'])
    expect((await run('create', '-b', 'base.raw', 'ov.add-cow', '8M')).code).toBe(0)
    await writeGuest(join(dir, 'ov.add-cow'), [[4 * MiB + 100, Buffer.alloc(1000, 0x55)]])
    const without = await run('resize', 'ov.add-cow', '-4M')
    expect(without.code).toBe(1)
    expect(without.stderr).toContain('--shrink')
    const lossy = await run('resize', '--shrink', 'ov.add-cow', '-4M')
    expect(lossy.code).toBe(1)
    expect(lossy.stderr).toContain(`holds data at offset ${4 * MiB + 100}`)
    const ok = await run('resize', '--shrink', 'ov.add-cow', '5M')
    expect(ok.code, ok.stderr).toBe(0)
    const check = await run('check', '--json', 'ov.add-cow')
    expect(check.code, check.stdout).toBe(0)
    expect((await run('info', '--json', 'ov.add-cow')).stdout).toContain(
      `"virtual-size": ${5 * MiB}`,
    )
    expect((await run('convert', 'ov.add-cow', 'ours.raw')).code).toBe(0)
    await tool('qemu-img', [
      'create',
      '-q',
      '-f',
      'qcow2',
      '-b',
      'base.raw',
      '-F',
      'raw',
      join(dir, 'peer.qcow2'),
      '8M',
    ])
    await tool('qemu-io', [
      '-f',
      'qcow2',
      '-c',
      'write -P 0x55 4194404 1000',
      join(dir, 'peer.qcow2'),
    ])
    await tool('qemu-img', [
      'resize',
      '-q',
      '--shrink',
      '-f',
      'qcow2',
      join(dir, 'peer.qcow2'),
      '5M',
    ])
    expect((await compare('ours.raw', 'raw', 'peer.qcow2', 'qcow2')).code).toBe(0)
  })
})
