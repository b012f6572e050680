// Live snapshots of a served overlay while a verifying client writes through the export
// (issue 17 items 1 and 5): no acknowledged write is lost, the export never makes the client
// reconnect, each frozen layer is readable by qemu-img while the export runs and holds
// exactly the guest view at its snapshot.
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { LiveSnapshotResult, LiveStatus } from '../../../shared/live-control'
import { sendControlRequest } from '../../../main/engine/live/control'
import { openImage } from '../../../main/engine/open'
import { createOverlay } from '../../../main/engine/ops/create'
import { startExport, type ExportHandle } from '../../../main/nbd/start-export'
import { runAddcow } from '../../helpers/cli'
import { expectEngineError } from '../../helpers/errors'
import { RandomWriter } from '../../helpers/live-writer'
import { basePattern } from '../../helpers/nbd/fixtures'
import { BLOCK } from '../../helpers/nbd/write-history'
import { requireTools, tempDir, tool, toolStatus } from '../../helpers/tools'

const MIB = 1024 * 1024
const BASE_SIZE = 32 * MIB
const SIZE = 64 * MIB
const BLOCKS = SIZE / BLOCK
const haveTools = requireTools('qemu-img', 'qemu-io')
const cleanups: (() => Promise<void>)[] = []

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** What a never-written block holds: the base's pattern, zeros past the base. */
function original(block: number): Buffer {
  const offset = block * BLOCK
  return offset < BASE_SIZE ? basePattern(offset, BLOCK) : Buffer.alloc(BLOCK)
}

/** A 64 MiB overlay (1024 clusters, so no layer fills up and drops its base) over a 32 MiB patterned raw base, served with a control socket. */
async function serve(): Promise<{ folder: string; handle: ExportHandle; control: string }> {
  const folder = await tempDir('addcow-live-')
  cleanups.push(folder.cleanup)
  await writeFile(join(folder.path, 'base.raw'), basePattern(0, BASE_SIZE))
  const top = join(folder.path, 'disk.add-cow')
  await createOverlay({
    overlay: top,
    backing: 'base.raw',
    backingFormat: 'raw',
    size: SIZE,
    clusterSize: 64 * 1024,
  })
  const control = join(folder.path, 'ctl', 'disk.control')
  const handle = await startExport({
    image: top,
    format: 'add-cow',
    listen: { socket: join(folder.path, 'nbd.sock') },
    controlSocket: control,
  })
  cleanups.push(() => handle.stop())
  return { folder: folder.path, handle, control }
}

/** The guest view of `image` (with its chain) as qemu-img reads it through a raw data file. */
async function qemuImgRaw(path: string, folder: string, name: string): Promise<Buffer> {
  const out = join(folder, `${name}.out`)
  await tool('qemu-img', ['convert', '-U', '-f', 'raw', '-O', 'raw', path, out])
  return readFile(out)
}

/** The guest view of `image` and its chain, read by the engine (as `addcow convert` does). */
async function engineView(path: string): Promise<Buffer> {
  const disk = await openImage(path, { format: 'add-cow', readOnly: true })
  try {
    return await disk.read(0, disk.size)
  } finally {
    await disk.close()
  }
}

/** Blocks where `later` holds an older write id than `earlier` (ids grow with time). */
function newerOrEqual(later: Buffer, earlier: Buffer): number[] {
  const wrong: number[] = []
  for (let block = 0; block < BLOCKS; block++) {
    const at = block * BLOCK
    if (later.subarray(at, at + BLOCK).equals(earlier.subarray(at, at + BLOCK))) continue
    if (writeId(later, at) < writeId(earlier, at)) wrong.push(block)
  }
  return wrong
}

/** The id of the write a block holds (blockData's first field; 0 for an original block). */
function writeId(view: Buffer, at: number): number {
  return view.readUInt32BE(at + 12) === 0x6b696c6c ? view.readUInt32BE(at) : 0
}

describe.skipIf(!haveTools)('live snapshot through the control socket', () => {
  it('keeps every acknowledged write across repeated snapshots under 16 writers', async () => {
    const { folder, handle, control } = await serve()
    // The control socket and its folder are the owner's alone.
    expect((await stat(control)).mode & 0o777).toBe(0o600)
    expect((await stat(join(folder, 'ctl'))).mode & 0o777).toBe(0o700)

    const writer = await RandomWriter.connect(join(folder, 'nbd.sock'), BLOCKS, original)
    cleanups.push(async () => writer.close())
    writer.start(16)
    const snapshots: { result: LiveSnapshotResult; view: Buffer }[] = []
    for (let round = 0; round < 4; round++) {
      await writer.waitFor(300)
      const result = (await sendControlRequest(control, 'snapshot')) as LiveSnapshotResult
      // The frozen layer holds the guest view at the snapshot: read it now, while the writer
      // goes on, through the engine (its chain opened read-only beside the export).
      snapshots.push({ result, view: await engineView(result.frozen) })
    }
    await writer.waitFor(300)
    const report = await writer.stop()
    expect(report.writes).toBeGreaterThan(1200)

    // Names: disk-snap1 .. disk-snap4, each frozen layer the previous top.
    expect(snapshots.map(({ result }) => result.top)).toEqual(
      [1, 2, 3, 4].map((n) => join(folder, `disk-snap${n}.add-cow`)),
    )
    expect(snapshots[0]!.result.frozen).toBe(join(folder, 'disk.add-cow'))
    expect(snapshots[3]!.result.frozen).toBe(join(folder, 'disk-snap3.add-cow'))

    const status = (await sendControlRequest(control, 'status')) as LiveStatus
    expect(status.top).toBe(join(folder, 'disk-snap4.add-cow'))
    expect(status.chain).toEqual([
      join(folder, 'disk-snap4.add-cow'),
      join(folder, 'disk-snap3.add-cow'),
      join(folder, 'disk-snap2.add-cow'),
      join(folder, 'disk-snap1.add-cow'),
      join(folder, 'disk.add-cow'),
      join(folder, 'base.raw'),
    ])
    expect(status.swaps).toBe(4)
    expect(
      status.jobs.filter((job) => job.kind === 'snapshot' && job.state === 'done'),
    ).toHaveLength(4)

    // Every acknowledged write reads back through the export, on the same connection.
    expect(writer.mismatches(await writer.readBack())).toEqual([])

    // Each frozen view is a point in time between the writes acknowledged before the snapshot
    // was asked for and those issued after it: every block holds its original content or a
    // write of this writer, and views of later snapshots never go back in time.
    for (const [index, { view }] of snapshots.entries()) {
      expect(view.length).toBe(SIZE)
      if (index > 0) expect(newerOrEqual(view, snapshots[index - 1]!.view)).toEqual([])
    }

    // Offline: stop the export, then the final top's chain read by the engine and by
    // qemu-img through an export of it equals the writer's record.
    await handle.stop()
    expect(writer.mismatches(await engineView(status.top))).toEqual([])
    const served = await startExport({
      image: status.top,
      format: 'add-cow',
      readOnly: true,
      listen: { socket: join(folder, 'check.sock') },
    })
    try {
      const out = join(folder, 'final.raw')
      await tool('qemu-img', [
        'convert',
        '-f',
        'raw',
        '-O',
        'raw',
        `nbd+unix:///?socket=${join(folder, 'check.sock')}`,
        out,
      ])
      expect(writer.mismatches(await readFile(out))).toEqual([])
    } finally {
      await served.stop()
    }
  }, 180_000)

  it('copies a running VM consistently: the frozen layer equals the guest view at the snapshot', async () => {
    const { folder, control } = await serve()
    const writer = await RandomWriter.connect(join(folder, 'nbd.sock'), BLOCKS, original, 99)
    cleanups.push(async () => writer.close())
    writer.start(8)
    await writer.waitFor(200)
    // Quiesce-free view of the guest at the snapshot: stop the writer, note what the guest
    // sees, snapshot, then let a new writer go on while the copy is taken.
    await writer.stop()
    const atSnapshot = await writer.readBack()
    // While it is the served top, its image file is locked for writing: qemu-img is refused.
    const readFrozen = (path: string) =>
      toolStatus('qemu-io', ['-r', '-f', 'raw', '-c', 'read 0 4k', path])
    const locked = await readFrozen(join(folder, 'disk.raw'))
    expect(locked.code).not.toBe(0)
    expect(locked.stdout + locked.stderr).toMatch(/Failed to get .*lock/)
    const { frozen } = (await sendControlRequest(control, 'snapshot')) as LiveSnapshotResult
    const later = await RandomWriter.connect(join(folder, 'nbd.sock'), BLOCKS, original, 7)
    cleanups.push(async () => later.close())
    later.start(8)
    await later.waitFor(100)
    // The frozen layer's files are locked shared now: qemu-io reads them (without -U, with
    // QEMU's own lock check) while the export runs.
    for (const path of [frozen, frozen.replace(/\.add-cow$/, '.raw')]) {
      const direct = await readFrozen(path)
      expect(direct.stdout + direct.stderr).not.toMatch(/lock/)
      expect(direct.code, direct.stderr).toBe(0)
    }
    // The whole chain under the snapshot, copied while the guest writes, is the guest view at
    // the snapshot: `addcow convert` of the frozen layer, and qemu-img's reading of that copy.
    const copy = join(folder, 'copy.raw')
    const converted = await runAddcow(['convert', '-f', 'add-cow', frozen, copy], {
      dataDir: join(folder, 'data'),
    })
    expect(converted.code, converted.stderr).toBe(0)
    expect((await readFile(copy)).equals(atSnapshot)).toBe(true)
    expect((await qemuImgRaw(copy, folder, 'copy')).equals(atSnapshot)).toBe(true)
    await later.stop()
  }, 120_000)

  it('answers bad requests with errors naming what is wrong, and carries on', async () => {
    const { control } = await serve()
    const unknown = await expectEngineError(
      sendControlRequest(control, 'defragment'),
      'BAD_ARGUMENT',
    )
    expect(unknown.message).toContain("'defragment'")
    const badArgs = await expectEngineError(
      sendControlRequest(control, 'snapshot', { name: 5 }),
      'BAD_ARGUMENT',
    )
    expect(badArgs.message).toContain("'name'")
    const noJob = await expectEngineError(
      sendControlRequest(control, 'job-cancel', { id: 'flatten-9' }),
      'NOT_FOUND',
    )
    expect(noJob.message).toContain('flatten-9')
    const status = (await sendControlRequest(control, 'status')) as LiveStatus
    expect(status.swaps).toBe(0)
  })
})
