// `addcow serve --copy-on-read` (issue 17 item 4): what clients read from the base lands in the
// overlay, whole clusters, with the same bytes; a guest write is never overwritten by a copy;
// once everything was read the overlay stands alone and the base can go.
import { readFile, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { createOverlay } from '../../../main/engine/ops/create'
import { startExport } from '../../../main/nbd/start-export'
import { addcow } from '../../helpers/cli'
import { RandomWriter } from '../../helpers/live-writer'
import { Pipeline } from '../../helpers/nbd/pipeline'
import { NbdTestClient } from '../../helpers/nbd/nbd-test-client'
import { BLOCK } from '../../helpers/nbd/write-history'
import { pattern } from '../../helpers/images'
import { requireTools, tempDir, tool } from '../../helpers/tools'
import { startServe } from '../nbd/serve-process'

const MiB = 1024 * 1024
const KiB = 1024
const CLUSTER = 64 * KiB
const ready = requireTools('qemu-io', 'qemu-img')
const base = pattern(8 * MiB, 11)
let dir: string
let dataDir: string
let cleanup: () => Promise<void>

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-cor-'))
  dataDir = join(dir, '.data')
  await writeFile(join(dir, 'base.raw'), base)
  await createOverlay({
    overlay: join(dir, 'vm.add-cow'),
    backing: 'base.raw',
    backingFormat: 'raw',
    clusterSize: CLUSTER,
  })
})
afterEach(async () => {
  await cleanup()
})

interface MapExtent {
  start: number
  length: number
  depth: number
}

/** The ranges the overlay itself holds, by `addcow map --json`. */
async function heldByOverlay(): Promise<[number, number][]> {
  const result = await addcow(['map', '--json', join(dir, 'vm.add-cow')], { dataDir, cwd: dir })
  expect(result.code, result.stderr).toBe(0)
  const extents = JSON.parse(result.stdout) as MapExtent[]
  return extents
    .filter((extent) => extent.depth === 0)
    .map((extent) => [extent.start, extent.start + extent.length])
}

describe.skipIf(!ready)('serve --copy-on-read', () => {
  it('copies the clusters clients read into the overlay, bytes equal, and nothing else', async () => {
    const served = await startServe(
      ['--copy-on-read', '--socket', join(dir, 'nbd.sock'), 'vm.add-cow'],
      { dataDir, cwd: dir },
    )
    try {
      // One read across three clusters (unaligned at both ends), one of exactly one cluster.
      await tool('qemu-io', ['-f', 'raw', '-r', '-c', `read ${MiB + 100} ${150 * KiB}`, served.uri])
      await tool('qemu-io', ['-f', 'raw', '-r', '-c', `read ${5 * MiB} ${CLUSTER}`, served.uri])
      expect(served.stderr()).toContain('read-write, copy-on-read')
    } finally {
      expect(await served.stop()).toBe(0)
    }
    expect(await heldByOverlay()).toEqual([
      [MiB, MiB + 3 * CLUSTER],
      [5 * MiB, 5 * MiB + CLUSTER],
    ])
    // The overlay's image file holds the base's bytes there (its data is at guest offsets).
    const image = await readFile(join(dir, 'vm.raw'))
    for (const [start, end] of [
      [MiB, MiB + 3 * CLUSTER],
      [5 * MiB, 5 * MiB + CLUSTER],
    ] as const) {
      expect(image.subarray(start, end).equals(base.subarray(start, end))).toBe(true)
    }
  }, 60_000)

  it('once every cluster was read, the overlay stands alone: the base can be removed', async () => {
    const served = await startServe(
      ['--copy-on-read', '--socket', join(dir, 'nbd.sock'), 'vm.add-cow'],
      { dataDir, cwd: dir },
    )
    try {
      await tool('qemu-img', [
        'convert',
        '-f',
        'raw',
        '-O',
        'raw',
        served.uri,
        join(dir, 'read.raw'),
      ])
    } finally {
      expect(await served.stop()).toBe(0)
    }
    expect(await heldByOverlay()).toEqual([[0, 8 * MiB]])
    await rm(join(dir, 'base.raw'))
    const converted = await addcow(['convert', 'vm.add-cow', 'alone.raw'], { dataDir, cwd: dir })
    expect(converted.code, converted.stderr).toBe(0)
    expect((await readFile(join(dir, 'alone.raw'))).equals(base)).toBe(true)
  }, 60_000)

  it('a copy up that fails never fails the read: counted, the last error named in job status', async () => {
    // The serving process may not write past 512 KiB of any file: copies up into the overlay's
    // image file above that fail (EFBIG), as on a full disk.
    const control = join(dir, 'control.sock')
    const served = await startServe(
      [
        '--copy-on-read',
        '--socket',
        join(dir, 'nbd.sock'),
        '--control-socket',
        control,
        'vm.add-cow',
      ],
      { dataDir, cwd: dir, fileSizeBlocks: 1024 },
    )
    const status = async (): Promise<{ stdout: string; json: Record<string, unknown> }> => {
      const text = await addcow(['job', 'status', '--control-socket', control], {
        dataDir,
        cwd: dir,
      })
      expect(text.code, text.stderr).toBe(0)
      const json = await addcow(['job', 'status', '--json', '--control-socket', control], {
        dataDir,
        cwd: dir,
      })
      expect(json.code, json.stderr).toBe(0)
      return { stdout: text.stdout, json: JSON.parse(json.stdout) as Record<string, unknown> }
    }
    try {
      // Below the limit: copied, no error.
      await tool('qemu-io', ['-f', 'raw', '-r', '-c', `read 0 ${CLUSTER}`, served.uri])
      const clean = await status()
      expect(clean.json.copyOnReadErrors).toBeUndefined()
      expect(clean.stdout).not.toContain('Copy-on-read failed')
      // Every byte read through the export equals the base although the copies above fail.
      await tool('qemu-img', [
        'convert',
        '-f',
        'raw',
        '-O',
        'raw',
        served.uri,
        join(dir, 'read.raw'),
      ])
      expect((await readFile(join(dir, 'read.raw'))).equals(base)).toBe(true)
      const failed = await status()
      const errors = failed.json.copyOnReadErrors as { count: number; last: { message: string } }
      expect(errors.count).toBeGreaterThan(0)
      expect(errors.last.message).toContain(join(dir, 'vm.add-cow'))
      expect(failed.stdout).toMatch(
        new RegExp(`Copy-on-read failed ${errors.count} time\\(s\\) .*${join(dir, 'vm.add-cow')}`),
      )
    } finally {
      expect(await served.stop()).toBe(0)
    }
    // What was copied below the limit is held; nothing past it (it still reads from the base).
    const held = await heldByOverlay()
    expect(held[0]).toEqual([0, held[0]![1]])
    expect(held[0]![1]).toBeGreaterThanOrEqual(CLUSTER)
    expect(Math.max(...held.map(([, end]) => end))).toBeLessThanOrEqual(512 * KiB)
    const check = await addcow(['check', 'vm.add-cow'], { dataDir, cwd: dir })
    expect(check.code, check.stdout + check.stderr).toBe(0)
  }, 60_000)

  it('never copies over a guest write: readers and a writer on the same clusters', async () => {
    const handle = await startExport({
      image: join(dir, 'vm.add-cow'),
      format: 'add-cow',
      listen: { socket: join(dir, 'nbd.sock') },
      copyOnRead: true,
    })
    const blocks = (8 * MiB) / BLOCK
    const original = (block: number): Buffer => base.subarray(block * BLOCK, (block + 1) * BLOCK)
    const writer = await RandomWriter.connect(join(dir, 'nbd.sock'), blocks, original, 5)
    const reader = await NbdTestClient.connect(join(dir, 'nbd.sock'))
    await reader.negotiate({ structured: true, meta: false })
    const reads = new Pipeline(reader, true)
    try {
      writer.start(8)
      // Sweep the disk with reads of 192 KiB (three clusters) at odd offsets, 4 at a time,
      // while the writer writes single blocks into the same clusters.
      for (let sweep = 0; sweep < 2; sweep++) {
        const pending: Promise<unknown>[] = []
        for (let offset = 4096 * sweep; offset + 192 * KiB <= 8 * MiB; offset += 128 * KiB) {
          pending.push(reads.send({ type: 0, offset, length: 192 * KiB }))
          if (pending.length === 4) await Promise.all(pending.splice(0))
        }
        await Promise.all(pending)
      }
      await writer.stop()
      expect(writer.mismatches(await writer.readBack())).toEqual([])
    } finally {
      reader.close()
      writer.close()
      await handle.stop()
    }
    // Everything was read, so the overlay holds every cluster, and still every write.
    expect(await heldByOverlay()).toEqual([[0, 8 * MiB]])
    const view = await readFile(join(dir, 'vm.raw'))
    expect(writer.mismatches(view)).toEqual([])
  }, 120_000)
})
