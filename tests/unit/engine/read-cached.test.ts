// The read fast path: readCached copies from the page cache on the calling thread
// (preadv2 with RWF_NOWAIT) and stops at the first piece that is not cached, and
// readFilePieces sends whatever it did not copy, and the second half of big reads, to the
// thread pool. A file evicted from the page cache (dd iflag=nocache) must not be read on the
// calling thread, and must still read back exactly.
import { execFileSync } from 'node:child_process'
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { BlockFile, readFilePieces, useServerReads } from '../../../main/engine/file'
import { native } from '../../../main/engine/native/index'
import { diskTempDir } from '../../helpers/tools'
import { pattern } from '../../helpers/images'

const MIB = 1024 * 1024
const addon = native()
const readCached = addon?.features.readCached ? addon.readCached : undefined

let folder: Awaited<ReturnType<typeof diskTempDir>>
beforeAll(async () => {
  folder = await diskTempDir()
})
afterAll(async () => {
  await folder.cleanup()
})

/** Write `data` to a new file and make it durable, so the page cache may drop it. */
async function durableFile(name: string, data: Buffer): Promise<string> {
  const path = join(folder.path, name)
  await writeFile(path, data)
  const handle = await open(path, 'r+')
  await handle.sync()
  await handle.close()
  return path
}

/** Drop the file's pages from the page cache (posix_fadvise DONTNEED, through GNU dd). */
function evict(path: string): void {
  execFileSync('dd', [`if=${path}`, 'iflag=nocache', 'count=0', 'status=none'])
}

/** Whether the folder is on tmpfs, whose pages live only in memory and are never evicted. */
function onTmpfs(path: string): boolean {
  return execFileSync('stat', ['-f', '-c', '%T', path], { encoding: 'utf8' }).trim() === 'tmpfs'
}

describe('readCached (native fast path)', () => {
  it('is built on Linux', () => {
    if (process.env.CI === 'true') expect(readCached).toBeTypeOf('function')
  })

  it('copies cached pieces in order, zeros past the end, and stops at the budget', async () => {
    if (!readCached) return expect(process.env.CI).not.toBe('true')
    const data = pattern(3 * 65536, 4)
    const path = await durableFile('cached.raw', data)
    const handle = await open(path, 'r')
    try {
      await handle.read(Buffer.alloc(data.length), 0, data.length, 0) // now cached
      const fd = handle.fd
      const target = Buffer.alloc(4 * 65536, 0xee)
      const pieces = Float64Array.of(
        ...[fd, 65536, 0, 65536],
        ...[fd, 0, 65536, 65536],
        ...[fd, 2 * 65536 + 100, 2 * 65536, 65536], // the last 100 bytes are past the end
      )
      expect(readCached.call(addon, target, pieces, 8 * MIB)).toBe(3)
      expect(target.subarray(0, 65536).equals(data.subarray(65536, 2 * 65536))).toBe(true)
      expect(target.subarray(65536, 2 * 65536).equals(data.subarray(0, 65536))).toBe(true)
      const tail = target.subarray(2 * 65536, 3 * 65536)
      expect(tail.subarray(0, 65536 - 100).equals(data.subarray(2 * 65536 + 100))).toBe(true)
      expect(tail.subarray(65536 - 100).every((byte) => byte === 0)).toBe(true)
      expect(target.subarray(3 * 65536).every((byte) => byte === 0xee)).toBe(true)
      // A budget of one byte lets one piece through, then stops.
      expect(readCached.call(addon, target, pieces, 1)).toBe(1)
      expect(readCached.call(addon, target, new Float64Array(0), 1)).toBe(0)
    } finally {
      await handle.close()
    }
  })

  it('refuses pieces outside the target and bad arguments', () => {
    if (!readCached) return expect(process.env.CI).not.toBe('true')
    const target = Buffer.alloc(4096)
    expect(() => readCached.call(addon, target, Float64Array.of(0, 0, 4000, 100), 1)).toThrow(
      RangeError,
    )
    expect(() => readCached.call(addon, target, Float64Array.of(-1, 0, 0, 1), 1)).toThrow(
      RangeError,
    )
    expect(() => readCached.call(addon, target, Float64Array.of(0, 0.5, 0, 1), 1)).toThrow(
      RangeError,
    )
    expect(() => readCached.call(addon, target, Float64Array.of(0, 0, 0), 1)).toThrow(TypeError)
    expect(() =>
      readCached.call(addon, new Float64Array(4) as unknown as Uint8Array, new Float64Array(4), 1),
    ).toThrow(TypeError)
    expect(() => readCached.call(addon, target, new Float64Array(4), -1)).toThrow(RangeError)
  })

  it('leaves data that is not in the page cache to the thread pool, which reads it right', async () => {
    if (!readCached) return expect(process.env.CI).not.toBe('true')
    const data = pattern(6 * MIB + 4321, 9)
    const path = await durableFile('evicted.raw', data)
    const other = pattern(MIB, 10)
    const otherPath = await durableFile('other.raw', other)
    const handle = await open(path, 'r')
    const otherHandle = await open(otherPath, 'r')
    try {
      evict(path)
      const probe = Buffer.alloc(65536)
      const first = readCached.call(addon, probe, Float64Array.of(handle.fd, 0, 0, 65536), MIB)
      // tmpfs keeps everything in memory (never evicted); on a disk filesystem nothing is cached.
      expect(first).toBe(onTmpfs(path) ? 1 : 0)

      // A big read of two files, evicted, then again once cached: the same bytes both times.
      for (const round of ['evicted', 'cached']) {
        const target = Buffer.alloc(7 * MIB + 4321, 0xee)
        const pieces = [
          ...[handle.fd, 0, 0, 3 * MIB],
          ...[otherHandle.fd, 0, 3 * MIB, MIB],
          ...[handle.fd, 3 * MIB, 4 * MIB, 3 * MIB + 4321],
        ]
        const reading = readFilePieces(target, pieces)
        expect(reading, round).toBeInstanceOf(Promise)
        await reading
        expect(target.subarray(0, 3 * MIB).equals(data.subarray(0, 3 * MIB)), round).toBe(true)
        expect(target.subarray(3 * MIB, 4 * MIB).equals(other), round).toBe(true)
        expect(target.subarray(4 * MIB).equals(data.subarray(3 * MIB)), round).toBe(true)
      }
      // What was just read is cached now, so the fast path takes all of it.
      expect(
        readCached.call(addon, probe, Float64Array.of(handle.fd, 5 * MIB, 0, 65536), MIB),
      ).toBe(1)
    } finally {
      await handle.close()
      await otherHandle.close()
    }
  })

  it('copies from a filesystem held in memory (tmpfs) inline, though it refuses RWF_NOWAIT', async () => {
    if (!readCached) return expect(process.env.CI).not.toBe('true')
    const memory = await mkdtemp(join('/dev/shm', 'addcow-read-cached-'))
    try {
      expect(onTmpfs(memory)).toBe(true)
      const data = pattern(3 * MIB + 123, 11)
      const path = join(memory, 'in-memory.raw')
      await writeFile(path, data)
      const handle = await open(path, 'r')
      try {
        // Two pieces, the second running past the end of the file: both done here.
        const target = Buffer.alloc(2 * MIB, 0xee)
        const pieces = Float64Array.of(handle.fd, 0, 0, MIB, handle.fd, 3 * MIB, MIB, MIB)
        expect(readCached.call(addon, target, pieces, 4 * MIB)).toBe(2)
        expect(target.subarray(0, MIB).equals(data.subarray(0, MIB))).toBe(true)
        expect(target.subarray(MIB, MIB + 123).equals(data.subarray(3 * MIB))).toBe(true)
        expect(target.subarray(MIB + 123).every((byte) => byte === 0)).toBe(true)
      } finally {
        await handle.close()
      }
    } finally {
      await rm(memory, { recursive: true, force: true })
    }
  })

  it('copies only small reads inline while a server runs', async () => {
    if (!readCached) return expect(process.env.CI).not.toBe('true')
    const data = pattern(MIB, 12)
    const path = await durableFile('served.raw', data)
    const file = await BlockFile.open(path, false)
    try {
      const whole = Buffer.alloc(MIB)
      await file.readAt(whole, 0) // cached now
      expect(file.readCachedAt(whole, 0)).toBe(true)
      const release = useServerReads()
      try {
        expect(file.readCachedAt(whole, 0)).toBe(false)
        const small = Buffer.alloc(64 * 1024)
        expect(file.readCachedAt(small, 4096)).toBe(true)
        expect(small.equals(data.subarray(4096, 4096 + 64 * 1024))).toBe(true)
        await file.readAt(whole.fill(0), 0) // through the thread pool, still right
        expect(whole.equals(data)).toBe(true)
      } finally {
        release()
        release() // idempotent: a second call must not undo another server's hold
      }
      expect(file.readCachedAt(whole, 0)).toBe(true)
    } finally {
      await file.close()
    }
  })
})
