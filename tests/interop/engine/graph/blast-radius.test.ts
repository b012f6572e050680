import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { addcow } from '../../../helpers/cli'
import { writeGuest } from '../../../helpers/images'
import { requireTools, tempDir, tool, toolStatus } from '../../../helpers/tools'

// The commit's blast radius against QEMU's own images: qcow2 overlays made by qemu-img on the
// base (one directly, one through another qcow2) are listed as reading through it, and qemu-img
// itself then sees their guest view change when `addcow commit --force` runs; a qcow2 that names
// another base is not listed, and qemu-img sees it unchanged.

const ready = requireTools('qemu-img', 'qemu-io')

let dir: string
let cleanup: () => Promise<void>
beforeAll(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-radius-interop-'))
})
afterAll(() => cleanup())

async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return addcow(args, { cwd: dir, dataDir: join(dir, 'data') })
}

/** Whether qemu-img sees the guest view of `image` (qcow2) equal to the raw file `raw`. */
async function sameAs(image: string, raw: string): Promise<boolean> {
  const result = await toolStatus('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, raw])
  if (result.code > 1) throw new Error(result.stderr)
  return result.code === 0
}

describe.runIf(ready)('blast radius with qemu-img overlays', () => {
  it('lists the qcow2 images reading the base, transitively, as qemu-img sees them change', async () => {
    await tool('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'base.raw'), '4M'])
    await tool('qemu-img', ['create', '-q', '-f', 'raw', join(dir, 'other.raw'), '4M'])
    await tool('qemu-io', ['-f', 'raw', '-c', 'write -P 0x11 0 4M', join(dir, 'base.raw')])
    await tool('qemu-img', ['convert', '-O', 'raw', join(dir, 'base.raw'), join(dir, 'before.raw')])
    const qcow = (name: string, backing: string, format: string): Promise<string> =>
      tool('qemu-img', [
        'create',
        '-q',
        '-f',
        'qcow2',
        '-b',
        backing,
        '-F',
        format,
        join(dir, name),
      ])
    await qcow('q1.qcow2', 'base.raw', 'raw')
    await qcow('q2.qcow2', 'q1.qcow2', 'qcow2')
    await qcow('elsewhere.qcow2', 'other.raw', 'raw')
    expect((await run(['create', '-b', 'base.raw', '-F', 'raw', 's.add-cow'])).code).toBe(0)
    await writeGuest(join(dir, 's.add-cow'), [[0, Buffer.alloc(65536, 0x77)]])

    const dry = await run(['commit', '--dry-run', '--json', 's.add-cow'])
    expect(dry.code, dry.stderr).toBe(0)
    const radius = JSON.parse(dry.stdout) as {
      dependents: { path: string; format: string; through: string[] }[]
      unchecked: unknown[]
    }
    expect(radius.dependents.map((image) => [image.path, image.format])).toEqual([
      [join(dir, 'q1.qcow2'), 'qcow2'],
      [join(dir, 'q2.qcow2'), 'qcow2'],
    ])
    expect(radius.dependents[1]!.through[1]).toBe(join(dir, 'q1.qcow2'))
    expect(radius.unchecked).toEqual([])

    for (const image of ['q1.qcow2', 'q2.qcow2'])
      expect(await sameAs(join(dir, image), join(dir, 'before.raw'))).toBe(true)
    const committed = await run(['commit', '--force', 's.add-cow'])
    expect(committed.code, committed.stderr).toBe(0)
    // What the engine predicted, qemu-img sees: both changed, the other base's overlay did not.
    for (const image of ['q1.qcow2', 'q2.qcow2'])
      expect(await sameAs(join(dir, image), join(dir, 'before.raw'))).toBe(false)
    expect(await sameAs(join(dir, 'elsewhere.qcow2'), join(dir, 'other.raw'))).toBe(true)
  })
})
