import { open, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { isEngineError } from '../../../main/engine/errors'
import { BlockFile } from '../../../main/engine/file'
import { native, nativeStatus } from '../../../main/engine/native/index'
import { lockFile } from '../../../main/engine/ops/lock'
import { copyRange, dataExtentsIn, punchOrZero } from '../../../main/engine/formats/common/sparse'

import { tempDir } from '../../helpers/tools'
import { pattern } from '../../helpers/images'

let dir: string
let cleanup: () => Promise<void>
beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-native-'))
})
afterEach(() => cleanup())

const status = nativeStatus()
if (!status.loaded) {
  if (process.env.CI === 'true') throw new Error(`CI needs the native addon: ${status.reason}`)
  console.warn(`SKIP native tests: ${status.reason}`)
}

describe.runIf(status.loaded)('native addon', () => {
  it('reports its features', () => {
    expect(status.features).toMatchObject({
      punchHole: true,
      seekData: true,
      lock: true,
      copyFileRange: true,
    })
  })

  it('lists data extents and punches holes', async () => {
    const path = join(dir, 'sparse')
    await writeFile(path, Buffer.alloc(0))
    const file = await BlockFile.open(path, true)
    try {
      await file.truncate(4 * 1024 * 1024)
      await file.writeAt(pattern(8192, 1), 65536)
      await file.writeAt(pattern(4096, 2), 3 * 1024 * 1024)
      expect(await dataExtentsIn(file, 0, 4 * 1024 * 1024)).toEqual([
        [65536, 65536 + 8192],
        [3 * 1024 * 1024, 3 * 1024 * 1024 + 4096],
      ])
      expect(await dataExtentsIn(file, 65536 + 4096, 3 * 1024 * 1024)).toEqual([
        [65536 + 4096, 65536 + 8192],
      ])
      expect(await punchOrZero(file, 65536, 8192)).toBe('punched')
      expect(await dataExtentsIn(file, 0, 4 * 1024 * 1024)).toEqual([
        [3 * 1024 * 1024, 3 * 1024 * 1024 + 4096],
      ])
      const back = Buffer.alloc(8192, 1)
      await file.readAt(back, 65536)
      expect(back.every((byte) => byte === 0)).toBe(true)
    } finally {
      await file.close()
    }
  })

  it('copies ranges in the kernel, zeros past the source end', async () => {
    const source = join(dir, 'source')
    const target = join(dir, 'target')
    await writeFile(source, pattern(100_000, 3))
    await writeFile(target, Buffer.alloc(300_000, 0xaa))
    const input = await BlockFile.open(source, false)
    const output = await BlockFile.open(target, true)
    try {
      await copyRange(input, 1000, output, 5000, 150_000)
    } finally {
      await input.close()
      await output.close()
    }
    const bytes = await readFile(target)
    expect(bytes.subarray(5000, 5000 + 99_000).equals(pattern(100_000, 3).subarray(1000))).toBe(
      true,
    )
    expect(bytes.subarray(5000 + 99_000, 155_000).every((byte) => byte === 0)).toBe(true)
    expect(bytes[4999]).toBe(0xaa)
    expect(bytes[155_000]).toBe(0xaa)
  })

  it('throws errno errors with their code', async () => {
    const path = join(dir, 'ro')
    await writeFile(path, 'x')
    const handle = await open(path, 'r')
    try {
      expect(() => native()!.punchHole(handle.fd, 0, 1)).toThrow(
        expect.objectContaining({ code: 'EBADF' }),
      )
      expect(() => native()!.punchHole(handle.fd, -1, 1)).toThrow(RangeError)
    } finally {
      await handle.close()
    }
  })

  it('takes QEMU-compatible locks: exclusive excludes everything, shared excludes writers', async () => {
    const path = join(dir, 'locked')
    await writeFile(path, Buffer.alloc(4096))
    const exclusive = await lockFile(path, 'exclusive', 'test')
    expect(exclusive.kind).toBe('qemu-ofd')
    const refused = await lockFile(path, 'shared', 'test').catch((caught: unknown) => caught)
    expect(isEngineError(refused, 'BUSY')).toBe(true)
    expect(String((refused as Error).message)).toContain(path)
    await exclusive.release()
    const reader = await lockFile(path, 'shared', 'test')
    const second = await lockFile(path, 'shared', 'test')
    const writer = await lockFile(path, 'exclusive', 'test').catch((caught: unknown) => caught)
    expect(isEngineError(writer, 'BUSY')).toBe(true)
    await reader.release()
    await second.release()
    await (await lockFile(path, 'exclusive', 'test')).release()
  })
})
