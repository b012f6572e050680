import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { headerSizeFor } from '../../../main/engine/formats/add-cow/header'
import { buildQcow2, buildQemuCow, buildV12 } from '../../helpers/format-builders'
import { makeSparse, patchFile, u32le, writeAddCow } from '../../helpers/images'
import { root, run, useFolders } from './helpers'

// Issue 13 item 3: a name-length field that runs over the padding (or a name made as long as the
// format allows) must not make a message grow with the file. Every command that reads the file
// (info, map, check, compare) prints at most about 1 KB per line, with the name cut and its full
// length stated.

useFolders()

/** The longest line any command may print about one hostile name. */
const MAX_LINE = 1024

const COMMANDS: [string, (file: string) => string[]][] = [
  ['info', (file) => ['info', file]],
  ['info --json', (file) => ['info', '--json', file]],
  ['map', (file) => ['map', file]],
  ['check', (file) => ['check', file]],
  ['check --json', (file) => ['check', '--json', file]],
  ['compare', (file) => ['compare', file, 'other.raw']],
]

/**
 * The lines a person reads: every line of text output; of JSON output (data: names kept whole,
 * as qemu-img's JSON keeps them) the messages and warnings it carries.
 */
function messagesIn(stdout: string, stderr: string): string[] {
  const lines = stderr.split('\n')
  let data: unknown
  try {
    data = JSON.parse(stdout)
  } catch {
    return [...lines, ...stdout.split('\n')]
  }
  const visit = (value: unknown, key: string): void => {
    if (typeof value === 'string' && (key === 'message' || key === 'warnings')) lines.push(value)
    else if (Array.isArray(value)) for (const item of value) visit(item, key)
    else if (value && typeof value === 'object')
      for (const [name, item] of Object.entries(value)) visit(item, name)
  }
  visit(data, '')
  return lines
}

/** Run every command on `file`; each line it prints stays short, and the cut is announced. */
async function expectBounded(file: string, fullLength: number): Promise<void> {
  await makeSparse(join(root, 'other.raw'), 65536)
  const lengths: string[] = []
  let announced = 0
  for (const [label, args] of COMMANDS) {
    const result = await run(args(file))
    const output = result.stdout + result.stderr
    expect(output.length, label).toBeGreaterThan(0)
    const longest = Math.max(...messagesIn(result.stdout, result.stderr).map((line) => line.length))
    lengths.push(`${label}: exit ${result.code}, ${output.length} chars, longest line ${longest}`)
    expect(longest, `${label}: ${output.slice(0, 300)}`).toBeLessThan(MAX_LINE)
    if (output.includes(`(${fullLength} characters)`)) announced++
  }
  console.log(`${file} (${fullLength}-character name):\n  ${lengths.join('\n  ')}`)
  // The commands that fail on the name say how long it is (the others may not quote it).
  expect(announced).toBeGreaterThan(0)
}

describe('a name-length field running over the padding', () => {
  it.each([
    ['64 KiB clusters', 16],
    ['2 MiB clusters', 21],
  ])('add-cow, %s: the image name runs into the zero padding', async (_label, clusterBits) => {
    await makeSparse(join(root, 'img.raw'), 65536)
    await makeSparse(join(root, 'base.raw'), 65536)
    const file = 'over.add-cow'
    await writeAddCow({
      path: join(root, file),
      imageName: 'img.raw',
      backingName: 'base.raw',
      size: 65536,
      clusterBits,
    })
    // Backing name at 76 (8 bytes), image name at 84: its length now runs to header_size.
    const length = headerSizeFor(clusterBits) - 84
    await patchFile(join(root, file), 16, u32le(length))
    await expectBounded(file, length)
  })

  it('add-cow: a name as long as the header holds, without a NUL, names a missing file', async () => {
    const file = 'long.add-cow'
    await writeAddCow({ path: join(root, file), imageName: 'x', size: 65536, clusterBits: 16 })
    const length = 65536 - 76
    await patchFile(join(root, file), 76, Buffer.alloc(length, 'a'))
    await patchFile(join(root, file), 12, u32le(76))
    await patchFile(join(root, file), 16, u32le(length))
    await expectBounded(file, length)
  })

  it('the V12 draft: the image name runs into the padding of a 64 KiB header', async () => {
    await makeSparse(join(root, 'img.raw'), 65536)
    const file = 'draft.add-cow'
    await writeFile(
      join(root, file),
      buildV12({ size: 65536, image: 'img.raw', pages: 16, allocated: new Set() }),
    )
    const length = 16 * 4096 - 80
    await patchFile(join(root, file), 24, u32le(length))
    await expectBounded(file, length)
  })

  it('qcow2: backing_file_size 1023 over a short name', async () => {
    const layout = buildQcow2({
      data: Buffer.alloc(65536, 1),
      compressedStream: Buffer.alloc(16),
      backing: 'base.raw',
      backingFormat: 'raw',
    })
    layout.file.writeUInt32BE(1023, 16)
    const file = 'over.qcow2'
    await writeFile(join(root, file), layout.file)
    await expectBounded(file, 1023)
  })

  it('cow: a 1023-character backing name that names a missing file', async () => {
    const name = 'b'.repeat(1023)
    const file = 'long.cow'
    await writeFile(
      join(root, file),
      buildQemuCow({ size: 65536, backing: name, data: Buffer.alloc(65536), allocated: new Set() }),
    )
    await expectBounded(file, 1023)
  })
})
