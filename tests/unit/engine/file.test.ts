import { fstatSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { chmod, mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isEngineError, throwIfAborted, wrapIoError } from '../../../main/engine/errors'
import { BlockFile, setFileObserver, zeroes, type FileEvent } from '../../../main/engine/file'
import { RawDisk } from '../../../main/engine/formats/raw/raw'
import { tempDir } from '../../helpers/tools'
import { pattern } from '../../helpers/images'
import { expectEngineError, expectEngineErrorSync } from '../../helpers/errors'

let root: string
let cleanup: () => Promise<void>

beforeEach(async () => {
  const made = await tempDir()
  root = made.path
  cleanup = made.cleanup
})

afterEach(async () => {
  setFileObserver(null)
  await cleanup()
})

describe('BlockFile', () => {
  it('reads zeros past the end and writes at any position', async () => {
    const path = join(root, 'f.raw')
    await writeFile(path, pattern(100, 1))
    const file = await BlockFile.open(path, true)
    try {
      const target = Buffer.alloc(300, 0xee)
      await file.readAt(target, 50)
      expect(target.subarray(0, 50).equals(pattern(100, 1).subarray(50))).toBe(true)
      expect(target.subarray(50).every((byte) => byte === 0)).toBe(true)
      await file.writeAt(Buffer.from([1, 2]), 200)
      expect(await file.length()).toBe(202)
      await file.truncate(4096)
      await file.datasync()
      await file.sync()
      expect(await file.length()).toBe(4096)
    } finally {
      await file.close()
    }
  })

  it('turns OS errors into engine errors naming the file', async () => {
    const missing = await expectEngineError(BlockFile.open(join(root, 'none'), false), 'NOT_FOUND')
    expect(missing.message).toBe(`Cannot open ${join(root, 'none')}: no such file.`)
    await writeFile(join(root, 'exists'), '')
    await expectEngineError(BlockFile.create(join(root, 'exists'), true), 'ALREADY_EXISTS')
    const readOnly = await BlockFile.open(join(root, 'exists'), false)
    try {
      const error = await expectEngineError(readOnly.writeAt(Buffer.alloc(1), 0), 'IO_ERROR')
      expect(error.path).toBe(join(root, 'exists'))
    } finally {
      await readOnly.close()
    }
    if (process.getuid?.() !== 0) {
      await chmod(join(root, 'exists'), 0o000)
      await expectEngineError(BlockFile.open(join(root, 'exists'), false), 'PERMISSION_DENIED')
    }
    expect(
      wrapIoError(Object.assign(new Error('x'), { code: 'ENOSPC' }), '/f', 'write').message,
    ).toBe('Cannot write /f: no space left on the device.')
    expect(isEngineError(wrapIoError('odd', '/f', 'read'), 'IO_ERROR')).toBe(true)
    const controller = new AbortController()
    throwIfAborted(controller.signal)
    controller.abort()
    expectEngineErrorSync(() => throwIfAborted(controller.signal, 'copy'), 'ABORTED')
  })

  it('shows every write, truncate and sync to an installed observer, and lets it fail them', async () => {
    const path = join(root, 'watched.raw')
    const file = await BlockFile.create(path, true)
    const seen: string[] = []
    const describe = (phase: string) => (event: FileEvent) =>
      seen.push(
        `${phase} ${event.kind} ${event.kind === 'write' ? `${event.position}+${event.data.length}` : event.kind === 'truncate' ? event.length : event.metadata}`,
      )
    expect(setFileObserver({ before: describe('before'), after: describe('after') })).toBeNull()
    try {
      await file.writeAt(Buffer.alloc(3), 10)
      await file.truncate(100)
      await file.datasync()
      await file.sync()
      expect(seen).toEqual([
        'before write 10+3',
        'after write 10+3',
        'before truncate 100',
        'after truncate 100',
        'before sync false',
        'after sync false',
        'before sync true',
        'after sync true',
      ])
      setFileObserver({
        before: () => {
          throw new Error('EIO (simulated)')
        },
      })
      const error = await expectEngineError(file.writeAt(Buffer.alloc(1), 0), 'IO_ERROR')
      expect(error.message).toContain('EIO (simulated)')
      expect(await readFile(path).then((data) => data[0])).toBe(0)
    } finally {
      setFileObserver(null)
      await file.close()
    }
  })

  it('hands out shared zero buffers', () => {
    expect(zeroes(10).length).toBe(10)
    expect(zeroes(3 * 1024 * 1024).every((byte) => byte === 0)).toBe(true)
  })
})

describe('RawDisk', () => {
  it('is its file, byte for byte', async () => {
    const path = join(root, 'r.raw')
    await writeFile(path, pattern(10000, 2))
    const disk = await RawDisk.open(path, false)
    try {
      expect(disk.size).toBe(10000)
      expect((await disk.read(0, 10000)).equals(pattern(10000, 2))).toBe(true)
      await disk.write(9998, Buffer.from([7, 8]), { fua: true })
      await disk.writeZeroes(0, 5000, { fua: true })
      await disk.discard(0, 1)
      await disk.flush()
      const content = await readFile(path)
      expect(content.subarray(0, 5000).every((byte) => byte === 0)).toBe(true)
      expect([...content.subarray(9998)]).toEqual([7, 8])
      // writeZeroes punched a hole over the first block where holes can be punched and listed.
      expect(await disk.blockStatus(10, 20)).toEqual([
        { offset: 10, length: 20, depth: 0, present: true, zero: disk.capabilities.blockStatus },
      ])
      expect(await disk.blockStatus(9990, 10)).toEqual([
        { offset: 9990, length: 10, depth: 0, present: true, zero: false },
      ])
      await expectEngineError(disk.read(9999, 2), 'OUT_OF_RANGE')
      await expectEngineError(disk.read(0, -5), 'OUT_OF_RANGE')
      await expectEngineError(disk.write(10000, Buffer.alloc(1)), 'OUT_OF_RANGE')
    } finally {
      await disk.close()
    }
    const readOnly = await RawDisk.open(path, true)
    try {
      await expectEngineError(readOnly.write(0, Buffer.alloc(1)), 'READ_ONLY')
      await expectEngineError(readOnly.writeZeroes(0, 1), 'READ_ONLY')
      expect((await readOnly.info())['virtual-size']).toBe(10000)
    } finally {
      await readOnly.close()
    }
  })
})

describe('RawDisk close', () => {
  it('closes its file even when the final sync fails, and reports the failure', async () => {
    const path = join(root, 'closing.raw')
    await writeFile(path, pattern(4096, 3))
    const disk = await RawDisk.open(path, false)
    const fd = disk.fd
    setFileObserver({
      before: (event) => {
        if (event.kind === 'sync') throw new Error('the device went away')
      },
    })
    await expect(disk.close()).rejects.toThrow('the device went away')
    setFileObserver(null)
    expect(() => fstatSync(fd)).toThrow(/EBADF/)
  })
})

describe('RawDisk block status on a sparse file', () => {
  it('reports holes as present zeros, like qemu-img map', async () => {
    const { native } = await import('../../../main/engine/native/index')
    if (process.env.CI === 'true') expect(native()?.features.seekData).toBe(true)
    const folder = await mkdtemp(join(tmpdir(), 'addcow-raw-'))
    try {
      const path = join(folder, 'sparse.raw')
      const handle = await open(path, 'w')
      await handle.truncate(8 * 1024 * 1024)
      await handle.write(Buffer.alloc(65536, 1), 0, 65536, 1024 * 1024)
      await handle.close()
      const disk = await RawDisk.open(path, true)
      try {
        const extents = await disk.blockStatus(0, disk.size)
        if (!disk.capabilities.blockStatus) {
          expect(extents).toEqual([
            { offset: 0, length: disk.size, depth: 0, present: true, zero: false },
          ])
          return
        }
        expect(extents).toEqual([
          { offset: 0, length: 1024 * 1024, depth: 0, present: true, zero: true },
          { offset: 1024 * 1024, length: 65536, depth: 0, present: true, zero: false },
          {
            offset: 1024 * 1024 + 65536,
            length: 7 * 1024 * 1024 - 65536,
            depth: 0,
            present: true,
            zero: true,
          },
        ])
      } finally {
        await disk.close()
      }
    } finally {
      await rm(folder, { recursive: true, force: true })
    }
  })
})

describe('RawDisk block status cache', () => {
  it('answers from the last data extent, and forgets it when holes are punched', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'addcow-raw-'))
    const MiB = 1024 * 1024
    try {
      const path = join(folder, 'dense.raw')
      const handle = await open(path, 'w')
      await handle.truncate(8 * MiB)
      await handle.write(Buffer.alloc(4 * MiB, 3), 0, 4 * MiB, 2 * MiB) // data at [2, 6) MiB
      await handle.close()
      const disk = await RawDisk.open(path, false)
      try {
        if (!disk.capabilities.blockStatus) return expect(process.env.CI).not.toBe('true')
        const data = (offset: number, length: number) => [
          { offset, length, depth: 0, present: true, zero: false },
        ]
        const zero = (offset: number, length: number) => [
          { offset, length, depth: 0, present: true, zero: true },
        ]
        expect(await disk.blockStatus(2 * MiB, 65536)).toEqual(data(2 * MiB, 65536))
        // Inside the extent now known, the answer comes from memory: a hole punched behind the
        // disk's back (another process; a served chain is locked against that) is not seen.
        execFileSync('fallocate', ['-p', '-o', String(4 * MiB), '-l', String(MiB), path])
        expect(await disk.blockStatus(3 * MiB, 2 * MiB)).toEqual(data(3 * MiB, 2 * MiB))
        expect(await disk.blockStatus(6 * MiB - 100, 100)).toEqual(data(6 * MiB - 100, 100))
        const fresh = await RawDisk.open(path, true)
        try {
          expect(await fresh.blockStatus(4 * MiB, 65536)).toEqual(zero(4 * MiB, 65536))
        } finally {
          await fresh.close()
        }
        // All hole, and across the extent's end: listed from the file.
        expect(await disk.blockStatus(7 * MiB, 4096)).toEqual(zero(7 * MiB, 4096))
        expect(await disk.blockStatus(5 * MiB + 4096, 2 * MiB)).toEqual([
          ...data(5 * MiB + 4096, MiB - 4096),
          ...zero(6 * MiB, MiB + 4096),
        ])
        // The disk's own punched holes are seen at once.
        await disk.write(4 * MiB, Buffer.alloc(MiB, 5)) // fill the hole again
        expect(await disk.blockStatus(2 * MiB, 4 * MiB)).toEqual(data(2 * MiB, 4 * MiB))
        await disk.discard(3 * MiB, MiB)
        expect(await disk.blockStatus(3 * MiB, 65536)).toEqual(zero(3 * MiB, 65536))
        expect(await disk.blockStatus(4 * MiB, 2 * MiB)).toEqual(data(4 * MiB, 2 * MiB))
        await disk.writeZeroes(4 * MiB, MiB)
        expect(await disk.blockStatus(4 * MiB, 4096)).toEqual(zero(4 * MiB, 4096))
        expect(await disk.blockStatus(5 * MiB, MiB)).toEqual(data(5 * MiB, MiB))
      } finally {
        await disk.close()
      }
    } finally {
      await rm(folder, { recursive: true, force: true })
    }
  })
})
