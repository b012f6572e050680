import { copyFile, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Disk } from '../../../../main/engine/disk'
import { openImage } from '../../../../main/engine/open'
import { addcow } from '../../../helpers/cli'
import { requireTools, tempDir, tool, toolStatus } from '../../../helpers/tools'
import { makeVariants, noise, qemuView, type Variant } from './qcow2-images'

const available = requireTools('qemu-img', 'qemu-io')

/** qemu-img check must find neither errors nor leaks. */
async function expectClean(path: string): Promise<void> {
  const check = await toolStatus('qemu-img', ['check', '--output=json', path])
  const report = JSON.parse(check.stdout) as {
    'check-errors': number
    corruptions?: number
    leaks?: number
  }
  expect(check.code, check.stderr + check.stdout).toBe(0)
  expect(report['check-errors']).toBe(0)
  expect(report.corruptions ?? 0).toBe(0)
  expect(report.leaks ?? 0).toBe(0)
}

/** qemu-img compare must find `path` identical to the raw file `expected`. */
async function expectSameAs(path: string, expected: Buffer, scratch: string): Promise<void> {
  await writeFile(scratch, expected)
  const compare = await toolStatus('qemu-img', [
    'compare',
    '-f',
    'raw',
    '-F',
    'qcow2',
    scratch,
    path,
  ])
  expect(compare.code, compare.stdout + compare.stderr).toBe(0)
}

/**
 * A deterministic mix of writes (unaligned, across clusters, some whole clusters) and zeroes,
 * applied to the disk and to `expected`, with a flush now and then.
 */
async function scribble(disk: Disk, expected: Buffer, seed: number, count: number): Promise<void> {
  let state = seed
  const next = (limit: number): number => {
    state = (state * 1103515245 + 12345) % 2147483648
    return state % limit
  }
  for (let i = 0; i < count; i++) {
    const length = 1 + next(i % 5 === 0 ? 300_000 : 20_000)
    const offset = next(disk.size - length)
    if (i % 6 === 5) {
      await disk.writeZeroes(offset, length)
      expected.fill(0, offset, offset + length)
    } else {
      const data = noise(length, seed + i)
      await disk.write(offset, data)
      data.copy(expected, offset)
    }
    if (i % 17 === 0) await disk.flush()
  }
}

describe.skipIf(!available)('writing into qcow2 images (commit into a qcow2 base)', () => {
  let dir: string
  let cleanup: () => Promise<void>
  let paths: Record<Variant, string>

  beforeAll(async () => {
    ;({ path: dir, cleanup } = await tempDir('addcow-qcow2-write-'))
    paths = await makeVariants(dir)
  })
  afterAll(async () => {
    await cleanup()
  })

  const variants: Variant[] = [
    'v2',
    'v3',
    'deflate',
    'zstd',
    'extended-l2',
    'chain-top',
    'zero-clusters',
    'small-clusters',
    'big-clusters',
    'refcount-1',
    'refcount-64',
    'snapshot',
    'over-raw',
  ]
  for (const variant of variants) {
    it(`${variant}: writes keep qemu-img check clean and the content right`, async () => {
      const path = join(dir, `written-${variant}.qcow2`)
      await copyFile(paths[variant], path)
      const expected = await qemuView(paths[variant])
      const disk = await openImage(path, { readOnly: false })
      try {
        expect(disk.readOnly).toBe(false)
        await scribble(disk, expected, variant.length * 7919, 60)
        // Writes show at once in the same session, before any flush.
        expect((await disk.read(0, disk.size)).equals(expected)).toBe(true)
      } finally {
        await disk.close()
      }
      await expectClean(path)
      await expectSameAs(path, expected, `${path}.want.raw`)
    })
  }

  it('uniform patterns written through the Disk API read back with qemu-io read -P', async () => {
    const path = join(dir, 'pattern.qcow2')
    await copyFile(paths.deflate, path)
    const disk = await openImage(path, { readOnly: false })
    try {
      await disk.write(123_456, Buffer.alloc(200_000, 0xa5)) // into compressed clusters
      await disk.write(3 * 1024 * 1024, Buffer.alloc(65536, 0x5a)) // a whole cluster
      await disk.writeZeroes(1024 * 1024, 3 * 65536)
    } finally {
      await disk.close()
    }
    await tool('qemu-io', [
      '-r',
      '-f',
      'qcow2',
      '-c',
      'read -P 0xa5 123456 200000',
      '-c',
      'read -P 0x5a 3M 64k',
      '-c',
      'read -P 0 1M 192k',
      path,
    ])
    await expectClean(path)
    // The whole-cluster zeroes became zero clusters, not written data.
    const map = JSON.parse(await tool('qemu-img', ['map', '--output=json', path])) as {
      start: number
      zero: boolean
      data: boolean
    }[]
    expect(map.find((extent) => extent.start === 1024 * 1024)).toMatchObject({
      zero: true,
      data: false,
    })
  })

  it('grows the refcount table when the file outgrows it', async () => {
    const path = join(dir, 'grow.qcow2')
    await tool('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', path, '16M'])
    const before = (await readFile(path)).readUInt32BE(56)
    const expected = Buffer.alloc(16 * 1024 * 1024)
    const disk = await openImage(path, { readOnly: false })
    try {
      const data = noise(12 * 1024 * 1024, 5)
      await disk.write(1024 * 1024, data)
      data.copy(expected, 1024 * 1024)
    } finally {
      await disk.close()
    }
    expect((await readFile(path)).readUInt32BE(56)).toBeGreaterThan(before)
    await expectClean(path)
    await expectSameAs(path, expected, `${path}.want.raw`)
  })

  it('keeps the internal snapshot intact while the active layer changes', async () => {
    const path = join(dir, 'snapshot-kept.qcow2')
    await copyFile(paths.snapshot, path)
    const disk = await openImage(path, { readOnly: false })
    try {
      await disk.write(0, Buffer.alloc(4 * 1024 * 1024, 0x77))
    } finally {
      await disk.close()
    }
    await expectClean(path)
    await tool('qemu-img', [
      'convert',
      '-O',
      'raw',
      '-l',
      'snapshot.name=before',
      path,
      `${path}.snap.raw`,
    ])
    expect((await readFile(`${path}.snap.raw`)).equals(await readFile(join(dir, 'base.raw')))).toBe(
      true,
    )
  })

  it('a crash before the flush leaves a consistent image (the old content, at most leaks)', async () => {
    const path = join(dir, 'crash.qcow2')
    await copyFile(paths.deflate, path)
    const before = await qemuView(paths.deflate)
    const disk = await openImage(path, { readOnly: false })
    try {
      // Only into compressed and unallocated clusters: writes into allocated data clusters go
      // in place (as in QEMU) and would be visible after a crash too.
      await disk.write(1024 * 1024 + 1000, noise(300_000, 9))
      await disk.write(2_000_000, noise(200_000, 10))
      await disk.writeZeroes(2 * 1024 * 1024 + 512 * 1024, 65536)
      // What a power cut would leave: the file as it is now, before any metadata write-back.
      await copyFile(path, `${path}.at-crash`)
    } finally {
      await disk.close()
    }
    const check = await toolStatus('qemu-img', ['check', '--output=json', `${path}.at-crash`])
    expect([0, 3]).toContain(check.code)
    expect((JSON.parse(check.stdout) as { corruptions?: number }).corruptions ?? 0).toBe(0)
    await expectSameAs(`${path}.at-crash`, before, `${path}.before.raw`)
    await expectClean(path)
  })

  it('addcow commit copies an add-cow overlay into its qcow2 base', async () => {
    const base = join(dir, 'commit-base.qcow2')
    await copyFile(paths.zstd, base)
    const dataDir = join(dir, 'data')
    const overlay = join(dir, 'commit.add-cow')
    const created = await addcow(['create', '-b', 'commit-base.qcow2', '-F', 'qcow2', overlay], {
      dataDir,
      cwd: dir,
    })
    expect(created.code, created.stderr).toBe(0)
    const expected = await qemuView(paths.zstd)
    const disk = await openImage(overlay, { readOnly: false })
    try {
      await scribble(disk, expected, 4242, 30)
    } finally {
      await disk.close()
    }
    const commit = await addcow(['commit', overlay], { dataDir, cwd: dir })
    expect(commit.code, commit.stderr).toBe(0)
    expect(commit.stdout).toMatch(/committed/i)
    await expectClean(base)
    await expectSameAs(base, expected, `${base}.want.raw`)
    const compare = await addcow(['compare', overlay, base], { dataDir })
    expect(compare.stdout).toMatch(/identical/)
  })
})
