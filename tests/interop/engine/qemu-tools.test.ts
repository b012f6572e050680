import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { AddCowDisk } from '../../../main/engine/formats/add-cow/add-cow-disk'
import { openImage } from '../../../main/engine/open'
import { addcow } from '../../helpers/cli'
import { requireTools, tempDir, tool, toolStatus } from '../../helpers/tools'

// The engine and the core CLI against the real qemu-img and qemu-io: bases made by QEMU,
// overlays made by `addcow create`, image files read back by QEMU, and a qcow2 twin (the same
// writes made by QEMU in its own format) as the reference for contents, maps and compares.

const ready = requireTools('qemu-img', 'qemu-io')
const KiB = 1024
const MiB = 1024 * KiB

let dir: string
let data: string
let cleanup: () => Promise<void>

beforeAll(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-engine-interop-'))
  data = join(dir, 'library')
})

afterAll(async () => {
  await cleanup()
})

function run(args: string[]) {
  return addcow(args, { cwd: dir, dataDir: data })
}

async function qemuIo(file: string, format: string, commands: string[]): Promise<string> {
  const output = await tool('qemu-io', [
    '-f',
    format,
    ...commands.flatMap((command) => ['-c', command]),
    file,
  ])
  expect(output).not.toContain('Pattern verification failed')
  return output
}

interface MapEntry {
  start: number
  length: number
  depth: number
  present: boolean
  zero: boolean
  data: boolean
}

/** Merge adjacent alike entries (qemu-img splits where host offsets are not contiguous). */
function normalise(entries: (MapEntry & { offset?: number })[]): MapEntry[] {
  const merged: MapEntry[] = []
  for (const { start, length, depth, present, zero, data } of entries) {
    const last = merged[merged.length - 1]
    if (
      last &&
      last.start + last.length === start &&
      last.depth === depth &&
      last.present === present &&
      last.zero === zero &&
      last.data === data
    ) {
      last.length += length
    } else {
      merged.push({ start, length, depth, present, zero, data })
    }
  }
  return merged
}

/** The guest writes every scenario makes, as [offset, length, byte]: aligned, unaligned, spanning, past the base. */
const WRITES: [number, number, number][] = [
  [0, 64 * KiB, 0x31],
  [64 * KiB + 100, 300, 0x32],
  [3 * 64 * KiB - 5000, 9000, 0x33],
  [MiB - 1, 2, 0x34],
  [2 * MiB + 4096, 128 * KiB, 0x35],
  [3 * MiB - 10, 10, 0x36],
]

describe.skipIf(!ready)('engine and CLI against qemu-img / qemu-io', () => {
  beforeAll(async () => {
    // A 2 MiB base written everywhere (so QEMU's raw driver reports it all as data).
    await tool('qemu-img', ['create', '-f', 'raw', join(dir, 'base.raw'), '2M'])
    await qemuIo(join(dir, 'base.raw'), 'raw', ['write -P 0xa1 0 1M', 'write -P 0xa2 1M 1M'])
  })

  it('addcow create makes files qemu-img sees as a sparse raw image and a header-plus-bitmap file', async () => {
    const result = await run(['create', '-b', 'base.raw', '-s', '3M', 'vm.add-cow'])
    expect(result.code, result.stderr).toBe(0)
    const image = JSON.parse(
      await tool('qemu-img', ['info', '--output=json', '-f', 'raw', join(dir, 'vm.raw')]),
    ) as Record<string, unknown>
    expect(image).toMatchObject({ format: 'raw', 'virtual-size': 3 * MiB, 'actual-size': 0 })
    const meta = JSON.parse(
      await tool('qemu-img', ['info', '--output=json', '-f', 'raw', join(dir, 'vm.add-cow')]),
    ) as Record<string, unknown>
    expect(meta['virtual-size']).toBe(2 * 64 * KiB) // header_size 64 KiB + one cluster of bitmap
    await tool('qemu-img', ['create', '-f', 'raw', join(dir, 'empty.raw'), '3M'])
    expect(
      (
        await toolStatus('qemu-img', [
          'compare',
          '-f',
          'raw',
          '-F',
          'raw',
          join(dir, 'vm.raw'),
          join(dir, 'empty.raw'),
        ])
      ).code,
    ).toBe(0)
  })

  it('data written through the engine is where QEMU reads it in the image file, fills included', async () => {
    const disk = (await openImage(join(dir, 'vm.add-cow'))) as AddCowDisk
    try {
      for (const [offset, length, byte] of WRITES)
        await disk.write(offset, Buffer.alloc(length, byte))
      expect(disk.allocatedClusters).toBe(10)
    } finally {
      await disk.close()
    }
    const image = join(dir, 'vm.raw')
    // Whole allocated clusters: the guest writes, and around them the fill from the base (or
    // zeros past its 2 MiB end).
    await qemuIo(image, 'raw', [
      'read -P 0x31 0 64k',
      'read -P 0xa1 64k 100',
      'read -P 0x32 65636 300',
      'read -P 0xa1 65936 65136',
      'read -P 0xa1 128k 60536',
      'read -P 0x33 191608 9000',
      'read -P 0xa1 200608 61536',
      'read -P 0xa1 960k 65535',
      'read -P 0x34 1048575 2',
      'read -P 0xa2 1048577 65535',
      'read -P 0 2M 4k',
      'read -P 0x35 2101248 128k',
      'read -P 0 2232320 61440',
      'read -P 0 3008k 65526',
      'read -P 0x36 3145718 10',
    ])
    // Unallocated clusters stay holes in the image file.
    await qemuIo(image, 'raw', ['read -P 0 256k 704k', 'read -P 0 1088k 960k'])
    const map = JSON.parse(
      await tool('qemu-img', ['map', '--output=json', '-f', 'raw', image]),
    ) as MapEntry[]
    const dataBytes = map
      .filter((entry) => entry.data)
      .reduce((sum, entry) => sum + entry.length, 0)
    expect(dataBytes).toBeLessThanOrEqual(10 * 64 * KiB)
  })

  describe('against a qcow2 twin with the same writes', () => {
    beforeAll(async () => {
      await tool('qemu-img', [
        'create',
        '-f',
        'qcow2',
        '-o',
        'cluster_size=65536',
        '-b',
        'base.raw',
        '-F',
        'raw',
        join(dir, 'twin.qcow2'),
        '3M',
      ])
      await qemuIo(
        join(dir, 'twin.qcow2'),
        'qcow2',
        WRITES.map(
          ([offset, length, byte]) => `write -P 0x${byte.toString(16)} ${offset} ${length}`,
        ),
      )
      await tool('qemu-img', [
        'convert',
        '-f',
        'qcow2',
        '-O',
        'raw',
        join(dir, 'twin.qcow2'),
        join(dir, 'twin.raw'),
      ])
    })

    it('the guest views are byte-identical', async () => {
      const disk = await openImage(join(dir, 'vm.add-cow'), { readOnly: true })
      try {
        const guest = await disk.read(0, disk.size)
        expect(guest.equals(await readFile(join(dir, 'twin.raw')))).toBe(true)
      } finally {
        await disk.close()
      }
      const compared = await run(['compare', 'vm.add-cow', 'twin.raw'])
      expect(compared).toEqual({ code: 0, stdout: 'Images are identical.\n', stderr: '' })
    })

    it('addcow map --json has the shape and content of qemu-img map', async () => {
      const ours = await run(['map', '--json', 'vm.add-cow'])
      expect(ours.code, ours.stderr).toBe(0)
      const entries = JSON.parse(ours.stdout) as MapEntry[]
      for (const entry of entries)
        expect(Object.keys(entry)).toEqual(['start', 'length', 'depth', 'present', 'zero', 'data'])
      let covered = 0
      for (const entry of entries) {
        expect(entry.start).toBe(covered)
        covered += entry.length
      }
      expect(covered).toBe(3 * MiB)
      const theirs = JSON.parse(
        await tool('qemu-img', ['map', '--output=json', '-f', 'qcow2', join(dir, 'twin.qcow2')]),
      ) as MapEntry[]
      expect(normalise(entries)).toEqual(normalise(theirs))
      expect(entries.some((entry) => entry.depth === 1)).toBe(true)
      expect(entries.some((entry) => !entry.present && entry.zero)).toBe(true)
    })

    it('addcow compare gives the exit codes of qemu-img compare on the same pairs', async () => {
      const files = {
        same: join(dir, 'same.raw'),
        changed: join(dir, 'changed.raw'),
        longer: join(dir, 'longer.raw'),
        longerDirty: join(dir, 'longer-dirty.raw'),
      }
      const twin = await readFile(join(dir, 'twin.raw'))
      await writeFile(files.same, twin)
      const changed = Buffer.from(twin)
      changed[1234567] = (changed[1234567] ?? 0) ^ 0xff
      await writeFile(files.changed, changed)
      await writeFile(files.longer, Buffer.concat([twin, Buffer.alloc(MiB)]))
      const dirty = Buffer.concat([twin, Buffer.alloc(MiB)])
      dirty[3 * MiB + 700] = 1
      await writeFile(files.longerDirty, dirty)
      const pairs: [string, string][] = [
        [join(dir, 'twin.raw'), files.same],
        [join(dir, 'twin.raw'), files.changed],
        [files.longer, join(dir, 'twin.raw')],
        [join(dir, 'twin.raw'), files.longerDirty],
        [join(dir, 'base.raw'), join(dir, 'twin.raw')],
      ]
      for (const [a, b] of pairs) {
        const qemu = await toolStatus('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', a, b])
        const ours = await run(['compare', '-f', 'raw', '-F', 'raw', a, b])
        expect(ours.code, `${a} vs ${b}: ${ours.stdout}${ours.stderr}`).toBe(qemu.code)
        const theirOffset = /offset (\d+)/.exec(qemu.stdout)?.[1]
        const ourOffset = /offset (\d+)/.exec(ours.stdout)?.[1]
        // qemu-img names the 512-byte sector of the first difference; we name the byte.
        if (theirOffset !== undefined)
          expect(Math.floor(Number(ourOffset) / 512) * 512).toBe(Number(theirOffset))
      }
      // The overlay against the same pairs, through the engine, agrees with the qcow2 twin.
      for (const other of [files.same, files.changed, files.longerDirty]) {
        const qemu = await toolStatus('qemu-img', [
          'compare',
          '-f',
          'qcow2',
          '-F',
          'raw',
          join(dir, 'twin.qcow2'),
          other,
        ])
        expect((await run(['compare', 'vm.add-cow', other])).code).toBe(qemu.code)
      }
      const missing = await toolStatus('qemu-img', [
        'compare',
        '-f',
        'raw',
        '-F',
        'raw',
        files.same,
        join(dir, 'nope.raw'),
      ])
      expect((await run(['compare', files.same, 'nope.raw'])).code).toBe(missing.code)
    })
  })

  it('after the last cluster is written, the image file alone is the guest view', async () => {
    const result = await run(['create', '-b', 'base.raw', '-c', '4K', '-s', '256K', 'full.add-cow'])
    expect(result.code, result.stderr).toBe(0)
    const disk = (await openImage(join(dir, 'full.add-cow'))) as AddCowDisk
    try {
      for (let offset = 0; offset < 256 * KiB; offset += 8 * KiB)
        await disk.write(offset + 4096, Buffer.alloc(4096, 0x77))
      expect(disk.allAllocated).toBe(false)
      for (let offset = 0; offset < 256 * KiB; offset += 8 * KiB)
        await disk.write(offset + 10, Buffer.alloc(5, 0x78))
      expect(disk.allAllocated).toBe(true)
    } finally {
      await disk.close()
    }
    const info = JSON.parse((await run(['info', '--json', 'full.add-cow'])).stdout) as Record<
      string,
      unknown
    >
    expect(info['all-allocated']).toBe(true)
    await qemuIo(join(dir, 'full.raw'), 'raw', [
      'read -P 0xa1 0 10',
      'read -P 0x78 10 5',
      'read -P 0xa1 15 4081',
      'read -P 0x77 4096 4096',
    ])
    expect((await stat(join(dir, 'full.raw'))).size).toBe(256 * KiB)
    const compared = await run(['compare', '-F', 'raw', 'full.add-cow', 'full.raw'])
    expect(compared.code, compared.stdout + compared.stderr).toBe(0)
  })
})
