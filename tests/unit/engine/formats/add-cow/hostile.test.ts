import { execFileSync } from 'node:child_process'
import { mkdir, mkdtemp, readdir, rm, symlink, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import type { AddCowDisk } from '../../../../../main/engine/formats/add-cow/add-cow-disk'
import { addCowDriver } from '../../../../../main/engine/formats/add-cow/add-cow-disk'
import { FEATURE_ALL_ALLOCATED } from '../../../../../main/engine/formats/add-cow/header'
import { makePolicy, STRICT_POLICY, type NamePolicy } from '../../../../../main/engine/names'
import { openImage, type OpenImageOptions } from '../../../../../main/engine/open'
import { createOverlay } from '../../../../../main/engine/ops/create'
import { parseSize } from '../../../../../main/engine/units'
import type { ErrorCode } from '../../../../../shared/error-codes'
import { tempDir } from '../../../../helpers/tools'
import {
  makeRaw,
  makeSparse,
  patchFile,
  u32le,
  u64le,
  writeAddCow,
} from '../../../../helpers/images'
import { expectEngineError, expectEngineErrorSync } from '../../../../helpers/errors'

// Hostile and broken inputs: each must end in an EngineError with the right code, naming the
// file and the value at fault, with no crash, no hang and no file handle left open.

let root: string
let cleanup: () => Promise<void>

beforeEach(async () => {
  const made = await tempDir()
  root = made.path
  cleanup = made.cleanup
})

afterEach(async () => {
  await cleanup()
})

async function openFiles(): Promise<number> {
  return (await readdir('/proc/self/fd')).length
}

/** Open `path` expecting `code`; checks the message names the file and no handle leaks. */
async function refuses(path: string, code: ErrorCode, options: OpenImageOptions = {}) {
  const before = await openFiles()
  const error = await expectEngineError(openImage(path, options), code)
  expect(await openFiles()).toBe(before)
  expect(error.message.length).toBeGreaterThan(10)
  expect(error.message).toMatch(/\.$/)
  return error
}

/** A healthy overlay over a 64 KiB raw base in `root`, 4 KiB clusters. */
async function healthy(name = 'ov'): Promise<string> {
  await makeRaw(join(root, 'base.raw'), 65536, 1).catch(() => undefined)
  const overlay = join(root, `${name}.add-cow`)
  await createOverlay({ overlay, backing: 'base.raw', clusterSize: 4096 })
  return overlay
}

describe('damaged headers', () => {
  it('a truncated header', async () => {
    const overlay = await healthy()
    await truncate(overlay, 50)
    expect((await refuses(overlay, 'CORRUPT_HEADER', { format: 'add-cow' })).field).toBe(
      'file length',
    )
    await truncate(overlay, 3000)
    const error = await refuses(overlay, 'CORRUPT_HEADER')
    expect(error.message).toContain('header_size 4096')
    expect(error.path).toBe(overlay)
  })

  it('a wrong magic', async () => {
    const overlay = await healthy()
    await patchFile(overlay, 0, Buffer.from('ACOX'))
    // Named as add-cow on the command line, it is refused before parsing; opened by the driver
    // itself, the header parser names the magic.
    expect((await refuses(overlay, 'FORMAT_MISMATCH', { format: 'add-cow' })).message).toContain(
      'not a add-cow file',
    )
    const error = await expectEngineError(
      addCowDriver.open(overlay, {
        readOnly: true,
        policy: STRICT_POLICY,
        depth: 0,
        visited: new Set(),
        lenient: false,
        openBacking: () => Promise.resolve(null),
        judgeDataFile: () => Promise.reject(new Error('not reached')),
      }),
      'BAD_MAGIC',
    )
    expect(error.field).toBe('magic')
    expect(error.value).toBe(0x584f4341)
  })

  it('an unknown incompatible feature bit', async () => {
    const overlay = await healthy()
    await patchFile(overlay, 24, u64le(1n << 40n))
    const error = await refuses(overlay, 'UNSUPPORTED_FEATURE')
    expect(error.value).toBe('0x10000000000')
  })

  it.each([8, 22, 64])('cluster_bits %i', async (bits) => {
    const overlay = await healthy()
    await patchFile(overlay, 20, u32le(bits))
    const error = await refuses(overlay, 'CORRUPT_HEADER')
    expect(error.field).toBe('cluster_bits')
    expect(error.message).toContain(`cluster_bits ${bits}`)
    expect(error.message).toContain(overlay)
  })

  it('a header_size that does not match the cluster size', async () => {
    const overlay = await healthy()
    await patchFile(overlay, 40, u32le(8192))
    expect((await refuses(overlay, 'CORRUPT_HEADER')).field).toBe('header_size')
  })

  it.each([
    ['backing name offset', 4, 70000],
    ['backing name length', 8, 5000],
    ['image name offset', 12, 4095],
    ['image name length', 16, 0xffffffff],
  ])('%s out of bounds', async (field, offset, value) => {
    const overlay = await healthy()
    await patchFile(overlay, offset, u32le(value))
    const error = await refuses(overlay, 'CORRUPT_HEADER')
    expect(error.field).toBe(field)
  })

  it('an add-cow file too short for the bitmap of its image file', async () => {
    const overlay = await healthy()
    await truncate(join(root, 'ov.raw'), 4096 * 8 * 4096 + 1) // needs 4097 bitmap bytes
    const error = await refuses(overlay, 'CORRUPT_IMAGE')
    expect(error.field).toBe('file length')
  })

  it('an ALL_ALLOCATED add-cow file cut to its header: the bitmap bound holds when the bitmap is not read', async () => {
    const overlay = join(root, 'flat.add-cow')
    await createOverlay({ overlay, size: 4096 * 8 * 4096 + 1, clusterSize: 4096 })
    const disk = (await openImage(overlay)) as AddCowDisk
    expect(disk.isAllAllocated()).toBe(true)
    await disk.close()
    await truncate(overlay, 4096)
    const error = await refuses(overlay, 'CORRUPT_IMAGE')
    expect(error.field).toBe('file length')
    expect(error.value).toBe(4096)
    expect(error.message).toContain('too short for the bitmap')
  })

  it('an image format other than raw', async () => {
    const overlay = await healthy()
    await patchFile(overlay, 60, Buffer.from('qcow2\0'))
    expect((await refuses(overlay, 'UNSUPPORTED_FORMAT')).value).toBe('qcow2')
  })
})

describe('chains that must not open', () => {
  it('image file == backing file', async () => {
    await makeRaw(join(root, 'same.raw'), 8192, 1)
    await writeAddCow({
      path: join(root, 'a.add-cow'),
      imageName: 'same.raw',
      backingName: 'same.raw',
      size: 8192,
      clusterBits: 12,
    })
    const error = await refuses(join(root, 'a.add-cow'), 'SAME_FILE')
    expect(error.message).toContain(join(root, 'same.raw'))
    // ...also when the two names differ but lead to one file.
    await symlink('same.raw', join(root, 'alias.raw'))
    await writeAddCow({
      path: join(root, 'b.add-cow'),
      imageName: 'same.raw',
      backingName: 'alias.raw',
      size: 8192,
      clusterBits: 12,
    })
    await refuses(join(root, 'b.add-cow'), 'SAME_FILE')
  })

  it('an image file that is the add-cow file itself, or shared with a lower layer', async () => {
    await writeAddCow({
      path: join(root, 'self.add-cow'),
      imageName: 'self.add-cow',
      size: 8192,
      clusterBits: 12,
    })
    await refuses(join(root, 'self.add-cow'), 'SAME_FILE')
    await makeRaw(join(root, 'base.raw'), 8192, 1)
    await makeSparse(join(root, 'shared.raw'), 8192)
    await writeAddCow({
      path: join(root, 'low.add-cow'),
      imageName: 'shared.raw',
      backingName: 'base.raw',
      size: 8192,
      clusterBits: 12,
    })
    await writeAddCow({
      path: join(root, 'high.add-cow'),
      imageName: 'shared.raw',
      backingName: 'low.add-cow',
      backingFormat: 'add-cow',
      size: 8192,
      clusterBits: 12,
    })
    await refuses(join(root, 'high.add-cow'), 'SAME_FILE')
  })

  it('a loop A -> B -> A, and A -> A', async () => {
    for (const name of ['a', 'b', 'self']) await makeSparse(join(root, `${name}.raw`), 8192)
    await writeAddCow({
      path: join(root, 'a.add-cow'),
      imageName: 'a.raw',
      backingName: 'b.add-cow',
      backingFormat: 'add-cow',
      size: 8192,
      clusterBits: 12,
    })
    await writeAddCow({
      path: join(root, 'b.add-cow'),
      imageName: 'b.raw',
      backingName: 'a.add-cow',
      backingFormat: 'add-cow',
      size: 8192,
      clusterBits: 12,
    })
    const error = await refuses(join(root, 'a.add-cow'), 'CHAIN_LOOP')
    expect(error.path).toBe(join(root, 'b.add-cow'))
    expect(error.value).toBe('a.add-cow')
    await writeAddCow({
      path: join(root, 'self.add-cow'),
      imageName: 'self.raw',
      backingName: 'self.add-cow',
      backingFormat: 'add-cow',
      size: 8192,
      clusterBits: 12,
    })
    await refuses(join(root, 'self.add-cow'), 'CHAIN_LOOP')
  })

  it('missing files', async () => {
    await makeSparse(join(root, 'a.raw'), 8192)
    await writeAddCow({
      path: join(root, 'a.add-cow'),
      imageName: 'a.raw',
      backingName: 'gone.raw',
      size: 8192,
      clusterBits: 12,
    })
    expect((await refuses(join(root, 'a.add-cow'), 'MISSING_FILE')).message).toContain(
      join(root, 'gone.raw'),
    )
    await writeAddCow({
      path: join(root, 'b.add-cow'),
      imageName: 'gone.raw',
      size: 8192,
      clusterBits: 12,
    })
    await refuses(join(root, 'b.add-cow'), 'MISSING_FILE')
    await refuses(join(root, 'nothing.add-cow'), 'NOT_FOUND')
  })

  it('a recorded format that does not match the file, or is unknown', async () => {
    await makeRaw(join(root, 'base.raw'), 8192, 1)
    await makeSparse(join(root, 'a.raw'), 8192)
    await writeAddCow({
      path: join(root, 'a.add-cow'),
      imageName: 'a.raw',
      backingName: 'base.raw',
      backingFormat: 'add-cow',
      size: 8192,
      clusterBits: 12,
    })
    const error = await refuses(join(root, 'a.add-cow'), 'FORMAT_MISMATCH')
    expect(error.message).toContain(join(root, 'base.raw'))
    await writeAddCow({
      path: join(root, 'b.add-cow'),
      imageName: 'a.raw',
      backingName: 'base.raw',
      backingFormat: 'vmdk9',
      size: 8192,
      clusterBits: 12,
    })
    const unknown = await refuses(join(root, 'b.add-cow'), 'UNSUPPORTED_FORMAT')
    expect([unknown.path, unknown.field, unknown.value]).toEqual([
      join(root, 'b.add-cow'),
      'backing format',
      'vmdk9',
    ])
    expect(unknown.message).toContain("records its backing file 'base.raw' in format 'vmdk9'")
  })
})

describe('names the policy refuses', () => {
  async function named(backingName: string, backingFormat = 'raw'): Promise<string> {
    await makeSparse(join(root, 'img.raw'), 8192)
    const path = join(root, 'n.add-cow')
    await rm(path, { force: true })
    await writeAddCow({
      path,
      imageName: 'img.raw',
      backingName,
      backingFormat,
      size: 8192,
      clusterBits: 12,
    })
    return path
  }
  const anything: NamePolicy = makePolicy({ allowAny: true })

  it.each(['/dev/zero', '/dev/null'])(
    'the device %s as backing file, whatever the policy',
    async (device) => {
      const path = await named(device)
      const error = await refuses(path, 'REFUSED_NAME', { policy: anything })
      expect(error.message).toContain('device nodes are never followed')
      expect(error.value).toBe(device)
    },
  )

  it.each([
    'nbd://127.0.0.1:10809/x',
    'json:{"file":{"driver":"file","filename":"/etc/shadow"}}',
    'http://example.com/a.img',
    'file:/etc/passwd',
  ])('the protocol name %s, whatever the policy', async (name) => {
    await refuses(await named(name), 'REFUSED_NAME', { policy: anything })
  })

  it('a folder and a FIFO as backing file, without hanging', async () => {
    await mkdir(join(root, 'folder'))
    await refuses(await named('folder'), 'REFUSED_NAME', { policy: anything })
    execFileSync('mkfifo', [join(root, 'pipe')])
    const error = await refuses(await named('pipe'), 'REFUSED_NAME', { policy: anything })
    expect(error.message).toContain('not a regular file')
  })

  it('a name outside the folder unless the user allows it', async () => {
    const outside = await mkdtemp(join(root, '..', 'addcow-outside-'))
    try {
      await makeRaw(join(outside, 'base.raw'), 8192, 7)
      for (const name of [join(outside, 'base.raw'), `../${outside.split('/').pop()}/base.raw`]) {
        const path = await named(name)
        const error = await refuses(path, 'UNTRUSTED_NAME')
        expect(error.message).toContain('--allow-name')
        expect(error.message).toContain(join(outside, 'base.raw'))
        const allowed = await openImage(path, {
          policy: makePolicy({ allowedPaths: [join(outside, 'base.raw')] }),
        })
        expect(allowed.backing?.path).toBe(join(outside, 'base.raw'))
        await allowed.close()
        const any = await openImage(path, { policy: anything })
        await any.close()
        const trusted = await openImage(path, {
          policy: makePolicy({
            isTrustedPair: (from, to) => from === path && to === join(outside, 'base.raw'),
          }),
        })
        await trusted.close()
      }
      // A link inside the folder that leads out of it is outside too; an absolute name of a
      // file inside the folder is not "relative and inside".
      await symlink(join(outside, 'base.raw'), join(root, 'link.raw'))
      await refuses(await named('link.raw'), 'UNTRUSTED_NAME')
      await makeRaw(join(root, 'inside.raw'), 8192, 8)
      await refuses(await named(join(root, 'inside.raw')), 'UNTRUSTED_NAME')
      const relative = await openImage(await named('inside.raw'))
      await relative.close()
    } finally {
      await rm(outside, { recursive: true, force: true })
    }
  })

  it('an image file outside the folder', async () => {
    const outside = await mkdtemp(join(root, '..', 'addcow-outside-'))
    try {
      await makeSparse(join(outside, 'img.raw'), 8192)
      await writeAddCow({
        path: join(root, 'o.add-cow'),
        imageName: join(outside, 'img.raw'),
        size: 8192,
        clusterBits: 12,
      })
      const error = await refuses(join(root, 'o.add-cow'), 'UNTRUSTED_NAME')
      expect(error.field).toBe('image file')
    } finally {
      await rm(outside, { recursive: true, force: true })
    }
  })
})

describe('sizes this engine cannot address', () => {
  it('1E and 2^60 bytes are refused when creating', async () => {
    expectEngineErrorSync(() => parseSize('1E'), 'SIZE_LIMIT')
    expectEngineErrorSync(() => parseSize('8P'), 'SIZE_LIMIT')
    const error = await expectEngineError(
      createOverlay({ overlay: join(root, 'huge.add-cow'), size: 2 ** 60 }),
      'SIZE_LIMIT',
    )
    expect(error.field).toBe('size')
    // A size that fits in 2^53 but needs a bitmap over the in-memory limit.
    await expectEngineError(
      createOverlay({
        overlay: join(root, 'huge.add-cow'),
        size: parseSize('4P'),
        clusterSize: 4096,
      }),
      'SIZE_LIMIT',
    )
    expect(await readdir(root)).toEqual([])
  })

  describe('image files of 2^52 and 2^60 bytes (sparse, on tmpfs)', () => {
    let shm: string
    beforeEach(async () => {
      shm = await mkdtemp('/dev/shm/addcow-test-')
    })
    afterEach(async () => {
      await rm(shm, { recursive: true, force: true })
    })

    it('refuses a 2^60-byte image file by its length', async () => {
      // Node's truncate stops at 2^53; coreutils' does not.
      execFileSync('truncate', ['-s', String(2n ** 60n), join(shm, 'huge.raw')])
      await writeAddCow({
        path: join(shm, 'huge.add-cow'),
        imageName: 'huge.raw',
        size: 0,
        clusterBits: 21,
      })
      const error = await expectEngineError(openImage(join(shm, 'huge.add-cow')), 'SIZE_LIMIT')
      expect(error.path).toBe(join(shm, 'huge.raw'))
      expect(error.message).toContain('1152921504606846976')
      await expectEngineError(openImage(join(shm, 'huge.raw'), { format: 'raw' }), 'SIZE_LIMIT')
    })

    it('opens a 2^52-byte image file only when its bitmap fits, and addresses its last byte', async () => {
      await truncate(await touch(join(shm, 'big.raw')), 2 ** 52)
      await writeAddCow({
        path: join(shm, 'big.add-cow'),
        imageName: 'big.raw',
        size: 0,
        clusterBits: 16,
        compatibleFeatures: 0n,
      })
      // 2^36 clusters need a 2^33-byte bitmap: over the limit, refused before any allocation.
      expect(
        (await expectEngineError(openImage(join(shm, 'big.add-cow')), 'SIZE_LIMIT')).field,
      ).toBe('virtual size')
      // At 2 MiB clusters the bitmap would fit in memory, but the file is too short for it.
      await writeAddCow({
        path: join(shm, 'big.add-cow'),
        imageName: 'big.raw',
        size: 0,
        clusterBits: 21,
        compatibleFeatures: 0n,
      })
      await expectEngineError(openImage(join(shm, 'big.add-cow')), 'CORRUPT_IMAGE')
      // With ALL_ALLOCATED the bitmap is never read (nor allocated), but the file must still be
      // long enough to hold it: a bound every reader checks (issue 13).
      await writeAddCow({
        path: join(shm, 'big.add-cow'),
        imageName: 'big.raw',
        size: 0,
        clusterBits: 16,
        compatibleFeatures: FEATURE_ALL_ALLOCATED,
      })
      await expectEngineError(openImage(join(shm, 'big.add-cow')), 'CORRUPT_IMAGE')
      await truncate(join(shm, 'big.add-cow'), 65536 + 2 ** 33) // sparse on tmpfs
      const disk = (await openImage(join(shm, 'big.add-cow'))) as AddCowDisk
      try {
        expect(disk.size).toBe(2 ** 52)
        expect(disk.geometry.clusters).toBe(2 ** 36)
        await disk.write(2 ** 52 - 3, Buffer.from([1, 2, 3]))
        expect([...(await disk.read(2 ** 52 - 4, 4))]).toEqual([0, 1, 2, 3])
        await expectEngineError(disk.read(2 ** 52 - 1, 2), 'OUT_OF_RANGE')
      } finally {
        await disk.close()
      }
    })
  })
})

async function touch(path: string): Promise<string> {
  await writeFile(path, '')
  return path
}
