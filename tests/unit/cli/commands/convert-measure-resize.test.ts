import { stat } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { guestView } from '../../../helpers/images'
import { expectFailure, root, run, useFolders } from '../helpers'

// addcow convert, measure and resize (main/cli/commands/{convert,measure,resize}.ts), run
// in-process: their arguments, outputs and refusals. qemu-img judges the files they write in
// tests/interop/cli/convert-measure-resize.test.ts.

useFolders({ overlay: true })

describe('addcow convert', () => {
  it('writes raw by default, qcow2 with -O, and refuses bad -O and -o', async () => {
    const raw = await run(['convert', 'vm.add-cow', 'out.img'])
    expect(raw).toEqual({
      code: 0,
      stdout: `Converted vm.add-cow to ${join(root, 'out.img')} (raw, 1 MiB).\n`,
      stderr: '',
    })
    expect(
      (await guestView(join(root, 'out.img'), 'raw')).equals(
        await guestView(join(root, 'vm.add-cow')),
      ),
    ).toBe(true)
    const qcow2 = await run([
      'convert',
      '-O',
      'qcow2',
      '-o',
      'cluster_size=512',
      'vm.add-cow',
      'out.qcow2',
    ])
    expect(qcow2.code, qcow2.stderr).toBe(0)
    expect(
      (await guestView(join(root, 'out.qcow2'), 'qcow2')).equals(
        await guestView(join(root, 'vm.add-cow')),
      ),
    ).toBe(true)
    expectFailure(
      await run(['convert', '-O', 'add-cow', 'vm.add-cow', 'x']),
      1,
      'convert',
      "-O 'add-cow' is not one of raw, qcow2",
    )
    expectFailure(
      await run(['convert', '-O', 'qcow2', '-o', 'compat=1.1', 'vm.add-cow', 'x']),
      1,
      'convert',
      "-o 'compat=1.1'",
    )
    expectFailure(
      await run(['convert', '-O', 'qcow2', '-o', 'cluster_size=3000', 'vm.add-cow', 'x']),
      1,
      'convert',
      'cluster size 3000',
    )
    expectFailure(await run(['convert', 'vm.add-cow']), 1, 'convert', 'Expected IMAGE and OUTPUT')
    await expect(stat(join(root, 'x'))).rejects.toThrow()
  })
})

describe('addcow measure', () => {
  it('prints qemu-img measure lines or JSON, and wants an image or --size', async () => {
    expect(await run(['measure', 'vm.add-cow'])).toEqual({
      code: 0,
      stdout: 'required size: 1048576\nfully allocated size: 1048576\n',
      stderr: '',
    })
    const json = await run(['measure', '--output=json', '-O', 'qcow2', '--size', '1G'])
    expect(JSON.parse(json.stdout)).toEqual({ required: 393216, 'fully-allocated': 1074135040 })
    expectFailure(await run(['measure']), 1, 'measure', 'either an IMAGE or --size')
    expectFailure(
      await run(['measure', '--size', '1M', 'vm.add-cow']),
      1,
      'measure',
      'either an IMAGE or --size',
    )
    expectFailure(
      await run(['measure', '-O', 'add-cow', 'vm.add-cow']),
      1,
      'measure',
      'measure does not know add-cow files',
    )
  })
})

describe('addcow resize', () => {
  it('takes SIZE, +SIZE and -SIZE (a negative size is not an option) and says what it did', async () => {
    expect((await run(['resize', 'vm.add-cow', '+1M'])).stdout).toBe(
      'Image resized: 1 MiB -> 2 MiB (2097152 bytes).\n',
    )
    expect((await run(['resize', 'vm.add-cow', '2M'])).stdout).toBe(
      'vm.add-cow already has 2097152 bytes; nothing to do.\n',
    )
    expectFailure(await run(['resize', 'vm.add-cow', '-1M']), 1, 'resize', 'Pass --shrink')
    expect((await run(['resize', '--shrink', 'vm.add-cow', '-1M'])).code).toBe(0)
    expect((await stat(join(root, 'vm.raw'))).size).toBe(1024 * 1024)
    expectFailure(await run(['resize', 'vm.add-cow', '0']), 1, 'resize', 'must not be 0')
    expectFailure(
      await run(['resize', 'vm.add-cow', 'big']),
      1,
      'resize',
      "The size 'big' is not a size",
    )
  })
})
