import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { isEngineError } from '../../../../main/engine/errors'
import { openImage } from '../../../../main/engine/open'
import { checkImage } from '../../../../main/engine/ops/check'
import { imageInfo } from '../../../../main/engine/ops/info'
import { createOverlay } from '../../../../main/engine/ops/create'
import {
  buildQcow2,
  buildQemuCow,
  buildUmlCow,
  buildV12,
  buildV18,
  buildV3orV7,
} from '../../../helpers/format-builders'
import { makeRaw, pattern } from '../../../helpers/images'
import { seededRandom } from '../../../helpers/numbers'
import { tempDir } from '../../../helpers/tools'

// Header mutation over every format (issue 13): a valid file of each format is mutated, seeded,
// thousands of times (bits flipped, fields set to boundary values, runs overwritten, the file
// cut short), and each mutant is opened strictly, inspected (info), read, mapped and checked.
// Every outcome must be a success or an EngineError with a stable code that names a file;
// never another exception, a hang or a huge allocation. The counts are printed.
//
// MUTATION_SEED and MUTANTS (per format; 300 by default, 2700 mutants a run) change the run; a
// failure prints the seed and the mutant's index, and the same seed makes the same mutants.

const SEED = Number(process.env.MUTATION_SEED ?? 1313)
const MUTANTS = Number(process.env.MUTANTS ?? 300)
/** No single mutant may take longer than this: a hang guard, not a speed assertion. */
const HANG_MS = 20_000
/** The most memory outside the JS heap (Buffers) the run may hold at any point. */
const MAX_EXTERNAL_BYTES = 1024 * 1024 * 1024

let root: string
let cleanup: () => Promise<void>

beforeAll(async () => {
  ;({ path: root, cleanup } = await tempDir('addcow-mutation-'))
  await makeRaw(join(root, 'base.raw'), 65536, 3)
  await makeRaw(join(root, 'img.raw'), 65536, 4)
})

afterAll(async () => {
  await cleanup()
})

/** A valid file of one format, and the byte ranges its mutations aim at (fields and tables). */
interface Seedling {
  name: string
  file: string
  build: () => Promise<Buffer>
  regions: [number, number][]
}

const SEEDLINGS: Seedling[] = [
  {
    name: 'add-cow',
    file: 'm.add-cow',
    build: async () => {
      const overlay = join(root, 'seed.add-cow')
      await createOverlay({ overlay, backing: 'base.raw', clusterSize: 4096 })
      return readFile(overlay)
    },
    regions: [
      [0, 128],
      [4096, 4100],
    ],
  },
  {
    name: 'add-cow, ALL_ALLOCATED',
    file: 'm-flat.add-cow',
    build: async () => {
      const overlay = join(root, 'seed-flat.add-cow')
      await createOverlay({ overlay, size: 65536, clusterSize: 4096 })
      return readFile(overlay)
    },
    regions: [[0, 128]],
  },
  {
    name: 'draft V18',
    file: 'm18.add-cow',
    build: () =>
      Promise.resolve(
        buildV18({
          clusterBits: 12,
          size: 65536,
          backing: 'base.raw',
          backingFormat: 'raw',
          image: 'img.raw',
          allocated: new Set([1, 3]),
        }),
      ),
    regions: [
      [0, 128],
      [4096, 4100],
    ],
  },
  {
    name: 'draft V12',
    file: 'm12.add-cow',
    build: () =>
      Promise.resolve(
        buildV12({
          size: 65536,
          backing: 'base.raw',
          backingFormat: 'raw',
          image: 'img.raw',
          allocated: new Set([0]),
        }),
      ),
    regions: [[0, 128]],
  },
  {
    name: 'draft v7',
    file: 'm7.add-cow',
    build: () =>
      Promise.resolve(
        buildV3orV7({
          layout: 'v7',
          size: 65536,
          backing: 'base.raw',
          image: 'img.raw',
          allocated: new Set([2]),
        }),
      ),
    regions: [
      [0, 24],
      [1030, 1050],
      [2550, 2570],
    ],
  },
  {
    name: 'qcow2',
    file: 'm.qcow2',
    build: () =>
      Promise.resolve(
        buildQcow2({
          data: pattern(65536, 5),
          compressedStream: Buffer.from([0x63, 0x60, 0x18, 0x05, 0xa3, 0x60, 0x14, 0x0c, 0x00]),
          backing: 'base.raw',
          backingFormat: 'raw',
        }).file,
      ),
    // Header and extensions; refcount table, refcount block, L1 and L2 heads.
    regions: [
      [0, 160],
      [65536, 65552],
      [131072, 131088],
      [196608, 196624],
      [262144, 262168],
    ],
  },
  {
    name: 'cow (QEMU v2)',
    file: 'm.cow',
    build: () =>
      Promise.resolve(
        buildQemuCow({
          size: 65536,
          backing: 'base.raw',
          data: pattern(65536, 6),
          allocated: new Set([0, 9]),
        }),
      ),
    regions: [
      [0, 24],
      [1024, 1060],
    ],
  },
  {
    name: 'cow (UML v3)',
    file: 'm-uml.cow',
    build: () =>
      Promise.resolve(
        buildUmlCow({
          size: 65536,
          backing: 'base.raw',
          alignment: 512,
          data: pattern(65536, 7),
          allocated: new Set([1]),
        }),
      ),
    regions: [[0, 48]],
  },
  {
    name: 'raw-probe',
    file: 'm.raw',
    // A raw disk whose first bytes carry every magic the probe knows, in turn.
    build: () => Promise.resolve(Buffer.alloc(65536, 0)),
    regions: [[0, 64]],
  },
]

const MAGICS = [
  Buffer.from('ACOW', 'latin1'),
  Buffer.from('ADD_COW\xff', 'latin1'),
  Buffer.from([0x51, 0x46, 0x49, 0xfb]),
  Buffer.from([0x4f, 0x4f, 0x4f, 0x4d]),
]

const U32_VALUES = [
  0, 1, 2, 3, 7, 8, 9, 12, 16, 20, 21, 22, 31, 32, 63, 64, 76, 255, 256, 511, 512, 1023, 1024, 4095,
  4096, 4097, 65535, 65536, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff,
]
const U64_VALUES = [
  0n,
  1n,
  512n,
  4096n,
  65536n,
  (1n << 32n) - 1n,
  1n << 32n,
  (1n << 53n) - 1n,
  1n << 53n,
  1n << 62n,
  1n << 63n,
  (1n << 64n) - 1n,
]

type Random = () => number

function pick<T>(random: Random, list: readonly T[]): T {
  return list[Math.floor(random() * list.length)]!
}

function at(random: Random, regions: [number, number][], length: number, width: number): number {
  const [start, end] = pick(random, regions)
  const span = Math.max(1, Math.min(end, length) - start - width + 1)
  return Math.max(0, Math.min(length - width, start + Math.floor(random() * span)))
}

/** One mutant of `seed`: a few seeded mutations, each in one of the seedling's regions. */
function mutate(
  random: Random,
  original: Buffer,
  regions: [number, number][],
  probe: boolean,
): { bytes: Buffer; what: string } {
  let bytes = Buffer.from(original)
  const done: string[] = []
  if (probe) {
    const magic = pick(random, MAGICS)
    magic.copy(bytes, 0)
    done.push(`magic ${magic.toString('hex')}`)
  }
  const count = 1 + Math.floor(random() * 3)
  for (let step = 0; step < count; step++) {
    // A file already cut below 8 bytes is only cut further.
    const kind = bytes.length < 8 ? 6 : Math.floor(random() * 7)
    if (kind === 0) {
      const offset = at(random, regions, bytes.length, 1)
      const bit = Math.floor(random() * 8)
      bytes[offset]! ^= 1 << bit
      done.push(`flip bit ${bit} at ${offset}`)
    } else if (kind === 1) {
      const offset = at(random, regions, bytes.length, 1)
      bytes[offset] = Math.floor(random() * 256)
      done.push(`byte at ${offset}`)
    } else if (kind === 2 || kind === 3) {
      const offset = at(random, regions, bytes.length, 4)
      const value =
        random() < 0.15 ? bytes.length + Math.floor(random() * 3) - 1 : pick(random, U32_VALUES)
      if (random() < 0.5) bytes.writeUInt32LE(value >>> 0, offset)
      else bytes.writeUInt32BE(value >>> 0, offset)
      done.push(`u32 ${value} at ${offset}`)
    } else if (kind === 4) {
      const offset = at(random, regions, bytes.length, 8)
      const value = pick(random, U64_VALUES)
      if (random() < 0.5) bytes.writeBigUInt64LE(value, offset)
      else bytes.writeBigUInt64BE(value, offset)
      done.push(`u64 ${value} at ${offset}`)
    } else if (kind === 5) {
      const offset = at(random, regions, bytes.length, 1)
      const length = 1 + Math.floor(random() * 64)
      const fill = pick(random, [0, 0xff, Math.floor(random() * 256)])
      bytes.fill(fill, offset, Math.min(bytes.length, offset + length))
      done.push(`${length} x ${fill} at ${offset}`)
    } else {
      const length = Math.floor(random() * bytes.length)
      bytes = bytes.subarray(0, length)
      done.push(`cut to ${length}`)
    }
  }
  return { bytes, what: done.join(', ') }
}

/** Codes for a damaged file: their errors name the field at fault. */
const FIELD_CODES = new Set([
  'CORRUPT_HEADER',
  'CORRUPT_IMAGE',
  'UNSUPPORTED_FEATURE',
  'SIZE_LIMIT',
])

/** What one use of a mutant ended in: 'ok', an error code, or a failure to report. */
async function outcome(
  work: () => Promise<unknown>,
  path: string,
): Promise<{ code: string; failure?: string }> {
  try {
    await work()
    return { code: 'ok' }
  } catch (error) {
    if (!isEngineError(error)) {
      return {
        code: 'crash',
        failure: error instanceof Error ? (error.stack ?? error.message) : String(error),
      }
    }
    if (error.code === 'INTERNAL') return { code: error.code, failure: error.message }
    if (!error.message.includes(root) && !error.message.includes(path))
      return { code: error.code, failure: `the message names no file: ${error.message}` }
    // A damaged file names the field at fault, so a person knows where to look.
    if (FIELD_CODES.has(error.code) && error.field === undefined)
      return { code: error.code, failure: `no field named: ${error.message}` }
    if (error.message.length > 2048)
      return { code: error.code, failure: `a ${error.message.length}-character message` }
    return { code: error.code }
  }
}

/** Open, read, map and close a mutant strictly; inspect it; check it. */
async function exercise(path: string): Promise<{ code: string; failure?: string }[]> {
  const results = []
  results.push(
    await outcome(async () => {
      const disk = await openImage(path)
      try {
        const size = disk.size
        const length = Math.min(size, 65536)
        if (length > 0) {
          await disk.read(0, length)
          await disk.read(size - Math.min(size, 512), Math.min(size, 512))
          await disk.blockStatus(0, Math.min(size, 16 * 1024 * 1024))
        }
      } finally {
        await disk.close()
      }
    }, path),
  )
  results.push(await outcome(() => imageInfo(path, { backingChain: true }), path))
  results.push(await outcome(() => checkImage(path), path))
  return results
}

function withHangGuard<T>(work: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const guard = new Promise<never>((_, fail) => {
    timer = setTimeout(() => fail(new Error(`hang: ${what} took over ${HANG_MS} ms`)), HANG_MS)
  })
  return Promise.race([work, guard]).finally(() => clearTimeout(timer))
}

describe('header mutation', () => {
  it.each(SEEDLINGS.map((seedling, index) => [seedling.name, seedling, index] as const))(
    '%s: every mutant opens or is refused with a typed error naming the file',
    async (_name, seedling, index) => {
      const original = await seedling.build()
      const random = seededRandom(SEED * 31 + index)
      const path = join(root, seedling.file)
      const counts = new Map<string, number>()
      const failures: string[] = []
      let peakExternal = 0
      const started = Date.now()
      for (let mutant = 0; mutant < MUTANTS; mutant++) {
        const { bytes, what } = mutate(
          random,
          original,
          seedling.regions,
          seedling.name === 'raw-probe',
        )
        await writeFile(path, bytes)
        let results
        try {
          results = await withHangGuard(exercise(path), `mutant ${mutant} (${what})`)
        } catch (error) {
          results = [{ code: 'hang', failure: String(error) }]
        }
        for (const result of results) {
          counts.set(result.code, (counts.get(result.code) ?? 0) + 1)
          if (result.failure && failures.length < 10)
            failures.push(`seed ${SEED} mutant ${mutant} (${what}): ${result.failure}`)
        }
        peakExternal = Math.max(peakExternal, process.memoryUsage().arrayBuffers)
      }
      const summary = [...counts.entries()]
        .sort((a, b) => b[1] - a[1])
        .map(([code, count]) => `${code} ${count}`)
        .join(', ')
      console.log(
        `${seedling.name}: ${MUTANTS} mutants (seed ${SEED}) in ${Date.now() - started} ms; ` +
          `outcomes of open+read+map / info / check: ${summary}; ` +
          `peak Buffer memory ${(peakExternal / 1024 / 1024).toFixed(1)} MiB`,
      )
      expect(failures).toEqual([])
      expect(peakExternal).toBeLessThan(MAX_EXTERNAL_BYTES)
      // The mutants reached past the first check: some open, some are refused.
      expect(counts.get('ok') ?? 0).toBeGreaterThan(0)
      expect([...counts.keys()].filter((code) => code !== 'ok').length).toBeGreaterThan(1)
    },
    600_000,
  )
})
