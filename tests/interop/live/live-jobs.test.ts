// The live flatten and the live commit (issue 17 items 2 and 3) on an export that a verifying
// writer keeps writing to: 4 KiB random writes with a known pattern, some FUA, reads checked as
// they come back. Afterwards every acknowledged write reads back through the export and from
// the files alone (qemu-img compare judges the flattened image file and the committed base),
// the rest equals the base's bytes, and addcow check finds nothing wrong.
import { createHash } from 'node:crypto'
import { mkdir, open, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { isEngineError } from '../../../main/engine/errors'
import { commitBlastRadius } from '../../../main/engine/ops/blast-radius'
import { liveCommit } from '../../../main/engine/live/commit'
import { liveFlatten } from '../../../main/engine/live/flatten'
import { liveSnapshot } from '../../../main/engine/live/snapshot'
import type { LiveDisk } from '../../../main/engine/live/live-disk'
import type { LiveTarget } from '../../../main/engine/live/registry'
import type { Library } from '../../../main/engine/library'
import { startExport } from '../../../main/nbd/start-export'
import { openImage } from '../../../main/engine/open'
import { checkImage } from '../../../main/engine/ops/check'
import { createOverlay } from '../../../main/engine/ops/create'
import { libraryIn, makeOverlay } from '../../helpers/images'
import { attackSeed, basePattern } from '../../helpers/nbd/fixtures'
import { VerifyingWriter } from '../../helpers/nbd/verifying-writer'
import { BLOCK } from '../../helpers/nbd/write-history'
import { requireTools, tempDir, toolStatus } from '../../helpers/tools'

const MIB = 1024 * 1024
const SIZE = 16 * MIB
const BLOCKS = SIZE / BLOCK
const CLUSTER = 64 * 1024
/** Slow enough that the writer runs through the whole job (16 MiB in about 2 s). */
const RATE = 8 * MIB

const available = requireTools('qemu-img')
const describeTools = available ? describe : describe.skip

let folder: { path: string; cleanup: () => Promise<void> }
beforeAll(async () => {
  folder = await tempDir('addcow-live-jobs-')
})
afterAll(async () => folder?.cleanup())

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/** `addcow serve`'s export of `image` (a LiveDisk, its locks, its jobs) on a socket in `dir`. */
async function serveLive(
  dir: string,
  image: string,
  library: Library,
): Promise<{
  live: LiveDisk
  target: LiveTarget
  socket: string
  stop(): Promise<void>
}> {
  const socket = join(dir, 'nbd.sock')
  const handle = await startExport({ image, format: 'add-cow', listen: { socket }, library })
  return { live: handle.live, target: handle.target, socket, stop: () => handle.stop() }
}

/** A folder with base.raw (basePattern) and an overlay on it, recorded in its own library. */
async function overlayOnBase(name: string): Promise<{
  dir: string
  base: string
  overlay: string
  library: ReturnType<typeof libraryIn>
}> {
  const dir = join(folder.path, name)
  const library = libraryIn(join(dir, 'data'))
  await mkdir(dir, { recursive: true })
  const base = join(dir, 'base.raw')
  await writeFile(base, basePattern(0, SIZE))
  const overlay = await makeOverlay(library, {
    overlay: join(dir, 'top.add-cow'),
    backing: 'base.raw',
    backingFormat: 'raw',
    clusterSize: CLUSTER,
  })
  return { dir, base, overlay, library }
}

/** Write `view` to a file and have qemu-img compare it with `image` (raw): exit 0 = same. */
async function qemuImgSame(dir: string, image: string, view: Buffer): Promise<void> {
  const expected = join(dir, 'expected.raw')
  await writeFile(expected, view)
  const compared = await toolStatus('qemu-img', [
    'compare',
    '-f',
    'raw',
    '-F',
    'raw',
    image,
    expected,
  ])
  expect(compared.code, compared.stdout + compared.stderr).toBe(0)
}

/** The guest view the writer expects over the whole disk, block by block. */
function expectedView(writer: VerifyingWriter): Buffer {
  return Buffer.concat(Array.from({ length: BLOCKS }, (_, block) => writer.expected(block)))
}

/** Start a writer on `socket` and let it get some writes acknowledged before the job starts. */
async function startWriter(
  socket: string,
  warmup = 200,
  blocks = BLOCKS,
): Promise<VerifyingWriter> {
  const seed = attackSeed()
  const writer = await VerifyingWriter.connect(socket, {
    blocks,
    baseBlocks: BLOCKS,
    seed,
  })
  writer.start()
  while (writer.counts.acked < warmup) await new Promise((resolve) => setTimeout(resolve, 5))
  return writer
}

describeTools('live flatten under a verifying writer', () => {
  it('streams the base in while the guest writes; every acknowledged write wins; the export ends on the image file alone', async () => {
    const { dir, base, overlay, library } = await overlayOnBase('flatten')
    const baseHash = sha256(await readFile(base))
    const served = await serveLive(dir, overlay, library)
    const original = served.live.current
    // The writer keeps to the first half, so the flatten always has the second half to stream
    // (on a fast machine random 4K writes allocate every cluster within a second).
    const writer = await startWriter(served.socket, 200, BLOCKS / 2)
    const progress: number[] = []
    const result = await liveFlatten(served.target, {
      rate: RATE,
      onProgress: (done) => progress.push(done),
    })
    // Writes after the swap land in the image file alone.
    const after = writer.counts.acked
    while (writer.counts.acked < after + 100) await new Promise((resolve) => setTimeout(resolve, 5))
    await writer.stop()
    console.log(
      `live flatten (seed ${writer.seed}): ${result.clusters} clusters copied, ${result.guestWon} already written by the guest; ${writer.counts.acked} writes acknowledged (${writer.counts.fua} FUA), ${writer.counts.reads} reads checked`,
    )
    expect(writer.wrong).toEqual([])
    expect(result.alreadyDone).toBe(false)
    expect(result.clusters).toBeGreaterThan(0)
    expect(progress.length).toBeGreaterThan(1)
    // The export swapped to a handle that no longer reads the base.
    expect(served.live.current).not.toBe(original)
    expect(served.live.current.backing).toBeNull()
    expect(served.live.current.isAllAllocated?.()).toBe(true)
    // The base left the chain: the export no longer locks it.
    expect([...served.target.locks.modes().keys()]).not.toContain(base)

    const view = await writer.readAll()
    expect(writer.mismatches(view)).toEqual([])
    await writer.close()
    await served.stop()

    // The image file alone is the guest view; the base never changed.
    await qemuImgSame(dir, join(dir, 'top.raw'), expectedView(writer))
    expect(sha256(await readFile(base))).toBe(baseHash)
    const report = await checkImage(overlay)
    expect(report.corruptions + report['check-errors'] + report.leaks).toBe(0)
    expect(report['all-allocated']).toBe(true)
  })

  it('cancels at any point with what it copied still valid, and a second run finishes it', async () => {
    const { dir, overlay, library } = await overlayOnBase('flatten-cancel')
    const served = await serveLive(dir, overlay, library)
    // The writer keeps to the first half: 4K writes at random touch every cluster of the disk
    // within a second on a fast machine, and the flatten would have nothing left to cancel.
    const writer = await startWriter(served.socket, 20, BLOCKS / 2)
    const cancel = new AbortController()
    let seen = 0
    const stopped = await liveFlatten(served.target, {
      rate: MIB,
      signal: cancel.signal,
      onProgress: (done) => {
        seen = done
        cancel.abort()
      },
    }).catch((error: unknown) => error)
    expect(isEngineError(stopped, 'ABORTED'), String(stopped)).toBe(true)
    expect(seen).toBeGreaterThan(0)
    const top = served.live.current
    const { allocated, total } = top.allocationCount!()
    expect(allocated).toBeGreaterThan(0)
    expect(allocated).toBeLessThan(total)
    expect(top.backing).not.toBeNull()
    // A whole-disk read is checked with the writer paused (it would race its writes).
    await writer.stop()
    expect(writer.mismatches(await writer.readAll())).toEqual([])
    writer.start()

    const finished = await liveFlatten(served.target)
    expect(finished.clusters).toBeLessThan(total)
    await writer.stop()
    expect(writer.wrong).toEqual([])
    expect(writer.mismatches(await writer.readAll())).toEqual([])
    await writer.close()
    await served.stop()
    await qemuImgSame(dir, join(dir, 'top.raw'), expectedView(writer))
  })
})

describeTools('live commit under a verifying writer', () => {
  it('active commit: copies the served top into its base while the guest writes, then serves the base', async () => {
    const { dir, base, overlay, library } = await overlayOnBase('active')
    const served = await serveLive(dir, overlay, library)
    const writer = await startWriter(served.socket)
    const result = await liveCommit(served.target, { rate: RATE })
    // The guest goes on, now on the base.
    const after = writer.counts.acked
    while (writer.counts.acked < after + 100) await new Promise((resolve) => setTimeout(resolve, 5))
    await writer.stop()
    console.log(
      `active commit (seed ${writer.seed}): ${result.clusters} clusters in ${result.passes} passes; ${writer.counts.acked} writes acknowledged, ${writer.counts.reads} reads checked`,
    )
    expect(writer.wrong).toEqual([])
    expect(result.active).toBe(true)
    expect(result.base).toBe(base)
    expect(served.live.current.path).toBe(base)
    expect(served.live.current.readOnly).toBe(false)
    // The base is the written top now (exclusive); the emptied overlay is no longer locked.
    const modes = served.target.locks.modes()
    expect(modes.get(base)).toBe('exclusive')
    expect([...modes.keys()]).not.toContain(overlay)
    expect(writer.mismatches(await writer.readAll())).toEqual([])
    await writer.close()
    await served.stop()

    // The base file alone holds the guest view; the overlay is empty and reads the same.
    await qemuImgSame(dir, base, expectedView(writer))
    const top = await openImage(overlay, { readOnly: true })
    try {
      expect(top.allocationCount!().allocated).toBe(0)
      expect((await top.read(0, SIZE)).equals(expectedView(writer))).toBe(true)
    } finally {
      await top.close()
    }
    const report = await checkImage(overlay)
    expect(report.corruptions + report['check-errors']).toBe(0)
  })

  it('commits the layer below the served top into its base; the guest view never changes', async () => {
    const { dir, base, overlay: middle, library } = await overlayOnBase('below')
    // Every fourth cluster of the guest view comes from the middle layer (the base holds
    // zeros there), so the view is still basePattern() as the writer expects.
    const baseFile = await open(base, 'r+')
    const mid = await openImage(middle, { readOnly: false })
    for (let offset = 0; offset < SIZE; offset += 4 * CLUSTER) {
      await baseFile.write(Buffer.alloc(CLUSTER), 0, CLUSTER, offset)
      await mid.write(offset, basePattern(offset, CLUSTER))
    }
    await baseFile.close()
    await mid.close()
    const top = await makeOverlay(library, {
      overlay: join(dir, 'upper.add-cow'),
      backing: 'top.add-cow',
      backingFormat: 'add-cow',
    })
    const served = await serveLive(dir, top, library)
    const writer = await startWriter(served.socket)
    const original = served.live.current
    const result = await liveCommit(served.target, { layer: 1, rate: RATE })
    await writer.stop()
    expect(writer.wrong).toEqual([])
    expect(result.active).toBe(false)
    expect(result.base).toBe(base)
    expect(result.clusters).toBe(SIZE / CLUSTER / 4)
    // The chain was opened again (the old handles cached the middle layer's old bitmap).
    expect(served.live.current).not.toBe(original)
    expect(served.live.current.path).toBe(top)
    expect(writer.mismatches(await writer.readAll())).toEqual([])
    await writer.close()
    await served.stop()
    // The base holds the middle layer's data now; the middle layer is empty.
    await qemuImgSame(dir, base, basePattern(0, SIZE))
    const emptied = await openImage(middle, { readOnly: true })
    try {
      expect(emptied.allocationCount!().allocated).toBe(0)
    } finally {
      await emptied.close()
    }
    for (const image of [middle, top]) {
      const report = await checkImage(image)
      expect(report.corruptions + report['check-errors'], image).toBe(0)
    }
  })

  it('live merge: snapshot, then commit the frozen layer into the base while the guest writes on the new top', async () => {
    const { dir, base, overlay, library } = await overlayOnBase('merge')
    const served = await serveLive(dir, overlay, library)
    const writer = await startWriter(served.socket)
    const snapshot = await liveSnapshot(served.target)
    expect(snapshot.frozen).toBe(overlay)
    const frozenView = await openImage(overlay, { readOnly: true })
    const frozenBytes = await frozenView.read(0, SIZE)
    await frozenView.close()
    const result = await liveCommit(served.target, { layer: 1, rate: RATE })
    await writer.stop()
    expect(writer.wrong).toEqual([])
    expect(result.active).toBe(false)
    expect(result.overlay).toBe(overlay)
    expect(served.live.current.path).toBe(snapshot.top)
    expect(writer.mismatches(await writer.readAll())).toEqual([])
    // Then the new top flattens: the export ends on its image file alone.
    await liveFlatten(served.target)
    expect(served.live.current.backing).toBeNull()
    expect(writer.mismatches(await writer.readAll())).toEqual([])
    await writer.close()
    await served.stop()
    // The base holds what the frozen layer held at the snapshot; the frozen layer is empty.
    await qemuImgSame(dir, base, frozenBytes)
    await qemuImgSame(dir, snapshot.top.replace(/\.add-cow$/, '.raw'), expectedView(writer))
    for (const image of [overlay, snapshot.top]) {
      const report = await checkImage(image)
      expect(report.corruptions + report['check-errors'], image).toBe(0)
    }
  })

  it('refuses, before writing anything, when other images read through the base, unless forced', async () => {
    const { dir, base, overlay, library } = await overlayOnBase('radius')
    const other = join(dir, 'other.add-cow')
    await createOverlay({ overlay: other, backing: 'base.raw', backingFormat: 'raw' })
    const radius = await commitBlastRadius({ overlay, base, library })
    expect(radius.dependents.map((image) => image.path)).toContain(other)
    const baseHash = sha256(await readFile(base))
    const served = await serveLive(dir, overlay, library)
    await served.live.write(0, Buffer.alloc(CLUSTER, 7))
    const refused = await liveCommit(served.target).catch((error: unknown) => error)
    expect(isEngineError(refused, 'CONFIRMATION_REQUIRED')).toBe(true)
    expect((refused as Error).message).toContain(other)
    expect(sha256(await readFile(base))).toBe(baseHash)
    expect(served.live.current.path).toBe(overlay)
    const forced = await liveCommit(served.target, { force: true })
    expect(forced.dependents.map((image) => image.path)).toContain(other)
    expect(served.live.current.path).toBe(base)
    await served.stop()
  })
})
