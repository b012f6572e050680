import { readdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isEngineError } from '../../../../main/engine/errors'
import type { Library } from '../../../../main/engine/library'
import { convertImage } from '../../../../main/engine/ops/convert'
import { measureImage } from '../../../../main/engine/ops/measure'
import { resizeImage } from '../../../../main/engine/ops/resize'
import { lockFiles } from '../../../../main/engine/ops/lock'
import { guestView, libraryIn, patternedOverlayScene } from '../../../helpers/images'
import { tempDir } from '../../../helpers/tools'

// convert, measure and resize in the engine (main/engine/ops/{convert,measure,resize}.ts): the
// output's content, its atomicity on cancel and error, the locks, and the refusals. qemu-img
// judges the files in tests/interop/cli.

const MiB = 1024 * 1024
let dir: string
let cleanup: () => Promise<void>
let library: Library

beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-convert-'))
  library = libraryIn(dir)
})
afterEach(() => cleanup())

describe('convert', () => {
  it.each(['raw', 'qcow2'])(
    'writes the guest view of the chain as %s, reporting progress to the end',
    async (format) => {
      const overlay = await patternedOverlayScene(dir, library)
      const progress: [number, number][] = []
      const result = await convertImage({
        source: overlay,
        output: join(dir, `out.${format}`),
        outputFormat: format,
        library,
        onProgress: (done, total) => progress.push([done, total]),
      })
      expect(result).toEqual({ output: join(dir, `out.${format}`), format, size: 4 * MiB })
      expect(
        (await guestView(join(dir, `out.${format}`), format)).equals(await guestView(overlay)),
      ).toBe(true)
      expect(progress.at(-1)).toEqual([4 * MiB, 4 * MiB])
    },
  )

  it('a cancel midway leaves no output and no temporary file; an existing output stays as it was', async () => {
    const overlay = await patternedOverlayScene(dir, library)
    await writeFile(join(dir, 'out.qcow2'), 'the old file')
    for (const format of ['raw', 'qcow2']) {
      const controller = new AbortController()
      const error = await convertImage({
        source: overlay,
        output: join(dir, `out.${format}`),
        outputFormat: format,
        signal: controller.signal,
        onProgress: () => controller.abort(),
      }).catch((caught: unknown) => caught)
      expect(isEngineError(error, 'ABORTED'), String(error)).toBe(true)
    }
    expect(await readFile(join(dir, 'out.qcow2'), 'utf8')).toBe('the old file')
    expect((await readdir(dir)).sort()).toEqual([
      'base.raw',
      'library.json',
      'out.qcow2',
      'ov.add-cow',
      'ov.raw',
    ])
  })

  it('refuses a chain file as output, a format it cannot write, and an image someone writes', async () => {
    const overlay = await patternedOverlayScene(dir, library)
    for (const output of ['ov.raw', 'base.raw', 'ov.add-cow']) {
      await expect(
        convertImage({ source: overlay, output: join(dir, output), outputFormat: 'raw' }),
      ).rejects.toMatchObject({ code: 'SAME_FILE' })
    }
    await expect(
      convertImage({ source: overlay, output: join(dir, 'x'), outputFormat: 'add-cow' }),
    ).rejects.toMatchObject({ code: 'NOT_CAPABLE' })
    const { locks } = await lockFiles([{ path: join(dir, 'ov.raw'), mode: 'exclusive' }], 'test')
    try {
      await expect(
        convertImage({ source: overlay, output: join(dir, 'x.raw'), outputFormat: 'raw' }),
      ).rejects.toMatchObject({ code: 'BUSY' })
    } finally {
      for (const lock of locks) await lock.release()
    }
    expect(
      (await readdir(dir)).filter((name) => name.startsWith('x') || name.startsWith('.')),
    ).toEqual([])
  })
})

describe('measure', () => {
  it('raw needs the virtual size; qcow2 counts only the clusters with data', async () => {
    const overlay = await patternedOverlayScene(dir, library)
    expect(await measureImage({ source: overlay, outputFormat: 'raw' })).toEqual({
      required: 4 * MiB,
      'fully-allocated': 4 * MiB,
      size: 4 * MiB,
    })
    const empty = await measureImage({ size: 4 * MiB, outputFormat: 'qcow2' })
    const full = await measureImage({ source: overlay, outputFormat: 'qcow2' })
    expect(full['fully-allocated']).toBe(empty['fully-allocated'])
    // Base data: 1 MiB at 0 and 300,000 bytes past 2 MiB (+5); overlay: 100,000 at 500,000.
    // In 64 KiB clusters: [0, 1 MiB) 16, [2 MiB, 2 MiB + 300,005) 5: 21 clusters.
    expect(full.required - empty.required).toBe(21 * 65536)
    await expect(measureImage({ outputFormat: 'qcow2' })).rejects.toMatchObject({
      code: 'BAD_ARGUMENT',
    })
  })
})

describe('resize', () => {
  it('grows (hiding the base tail), refuses to shrink without shrink or over data', async () => {
    const overlay = await patternedOverlayScene(dir, library)
    const before = await guestView(overlay)
    await expect(resizeImage({ path: overlay, size: { delta: -1 } })).rejects.toThrow(/--shrink/)
    await expect(
      resizeImage({ path: overlay, size: { absolute: MiB }, shrink: true }),
    ).rejects.toMatchObject({ code: 'BAD_ARGUMENT', offset: 2 * MiB + 5 })
    expect(await resizeImage({ path: overlay, size: { delta: MiB }, library })).toMatchObject({
      oldSize: 4 * MiB,
      newSize: 5 * MiB,
    })
    const after = await guestView(overlay)
    expect(after.subarray(0, 4 * MiB).equals(before)).toBe(true)
    expect(after.subarray(4 * MiB).every((byte) => byte === 0)).toBe(true)
    expect(
      await resizeImage({ path: overlay, size: { absolute: 4 * MiB + 1 }, shrink: true }),
    ).toMatchObject({ newSize: 4 * MiB + 1 })
    expect((await guestView(overlay)).equals(Buffer.concat([before, Buffer.alloc(1)]))).toBe(true)
  })
})

describe('resize limits', () => {
  it('refuses a size whose bitmap no open would accept, before changing any file', async () => {
    const { makeOverlay } = await import('../../../helpers/images')
    const { readdir, stat } = await import('node:fs/promises')
    await writeFile(join(dir, 'base.raw'), Buffer.alloc(4096, 1))
    const overlay = await makeOverlay(library, {
      overlay: join(dir, 'small.add-cow'),
      backing: 'base.raw',
      size: MiB,
      clusterSize: 4096,
    })
    // 4 KiB clusters: 512 MiB of bitmap covers 16 TiB.
    const openFiles = (): Promise<string[]> => readdir('/proc/self/fd')
    const filesBefore = await openFiles()
    await expect(
      resizeImage({ path: overlay, size: { absolute: 17 * 1024 ** 4 } }),
    ).rejects.toMatchObject({ code: 'SIZE_LIMIT' })
    // The refusal closed the image's files (they were once left for the garbage collector).
    expect(await openFiles()).toEqual(filesBefore)
    expect((await stat(join(dir, 'small.raw'))).size).toBe(MiB)
    expect((await stat(overlay)).size).toBe(8192)
    // Without a backing file (ALL_ALLOCATED) the bitmap is never read, so only the file
    // system's limit applies; when the image file cannot grow, the add-cow file keeps its length.
    const flat = await makeOverlay(library, {
      overlay: join(dir, 'flat.add-cow'),
      size: MiB,
      clusterSize: 4096,
    })
    const grown = await resizeImage({ path: flat, size: { absolute: 17 * 1024 ** 4 } }).catch(
      (error: unknown) => error,
    )
    if (grown instanceof Error) {
      expect(grown).toMatchObject({ code: 'SIZE_LIMIT' })
      expect((await stat(flat)).size).toBe(8192)
      expect((await stat(join(dir, 'flat.raw'))).size).toBe(MiB)
    } else {
      // A file system that takes 17 TiB files (XFS, btrfs): the resize simply happened.
      expect((await stat(join(dir, 'flat.raw'))).size).toBe(17 * 1024 ** 4)
    }
  })
})

describe('forEachGuestWindow (the read side of convert)', () => {
  it('visits every window in order with the guest data, reading ahead, and skips zero windows unread', async () => {
    const { forEachGuestWindow } =
      await import('../../../../main/engine/formats/common/guest-windows')
    const { openImage } = await import('../../../../main/engine/open')
    const overlay = await patternedOverlayScene(dir, library)
    const view = await guestView(overlay)
    const disk = await openImage(overlay, { readOnly: true })
    try {
      const seen: { start: number; length: number; data: boolean }[] = []
      const copy = Buffer.alloc(view.length)
      await forEachGuestWindow(
        disk,
        { unit: 65536, windowBytes: 3 * 65536 + 100, operation: 'convert' },
        async ({ start, length, data, knownZero }) => {
          seen.push({ start, length, data: data !== null })
          if (data) data.copy(copy, start, 0, length)
          for (let unit = 0; unit * 65536 < length; unit++) {
            const piece = view.subarray(
              start + unit * 65536,
              start + Math.min(length, (unit + 1) * 65536),
            )
            if (knownZero(unit)) expect(piece.every((byte) => byte === 0)).toBe(true)
          }
          // The writer's turn takes a while: the next window is read meanwhile.
          await new Promise((resolve) => setImmediate(resolve))
        },
      )
      expect(seen.map((window) => window.start)).toEqual(
        Array.from({ length: Math.ceil((4 * MiB) / (3 * 65536)) }, (_, index) => index * 3 * 65536),
      )
      expect(seen.reduce((sum, window) => sum + window.length, 0)).toBe(4 * MiB)
      expect(copy.equals(view)).toBe(true)
      // [3 MiB, 4 MiB) reads zeros everywhere (the base ends at 3 MiB): those windows are never read.
      expect(seen.filter((window) => window.start >= 3 * MiB).every((window) => !window.data)).toBe(
        true,
      )
    } finally {
      await disk.close()
    }
  })
})
