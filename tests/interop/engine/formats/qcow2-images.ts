import { copyFile, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { tool } from '../../../helpers/tools'

/**
 * qcow2 images made by qemu-img and qemu-io in the variants issue 7 names, over one 4 MiB base
 * with random data, text, and holes. Each variant is a file in `dir`; `raw` is the base.
 */
export const VARIANTS = [
  'v2',
  'v3',
  'deflate',
  'zstd',
  'extended-l2',
  'chain-top',
  'zero-clusters',
  'small-clusters',
  'big-clusters',
  'refcount-1',
  'refcount-64',
  'snapshot',
  'over-raw',
] as const

/** One variant's name. */
export type Variant = (typeof VARIANTS)[number]

export const BASE_SIZE = 4 * 1024 * 1024

/** Deterministic bytes (xorshift). */
export function noise(length: number, seed: number): Buffer {
  const buffer = Buffer.alloc(length)
  let state = seed >>> 0 || 1
  for (let i = 0; i < length; i++) {
    state ^= state << 13
    state >>>= 0
    state ^= state >>> 17
    state ^= state << 5
    state >>>= 0
    buffer[i] = state & 0xff
  }
  return buffer
}

async function io(path: string, ...commands: string[]): Promise<void> {
  await tool('qemu-io', ['-f', 'qcow2', ...commands.flatMap((command) => ['-c', command]), path])
}

async function convert(
  dir: string,
  path: string,
  options: string,
  compressed = false,
): Promise<void> {
  const flags = [...(compressed ? ['-c'] : []), ...(options ? ['-o', options] : [])]
  await tool('qemu-img', [
    'convert',
    '-f',
    'raw',
    '-O',
    'qcow2',
    ...flags,
    join(dir, 'base.raw'),
    path,
  ])
}

/** Make the base and every variant in `dir`; returns the variant paths. */
export async function makeVariants(dir: string): Promise<Record<Variant, string>> {
  const base = Buffer.alloc(BASE_SIZE)
  noise(256 * 1024, 7).copy(base, 128 * 1024)
  Buffer.from('All work and no play makes Jack a dull boy. '.repeat(20000)).copy(
    base,
    1024 * 1024,
    0,
    700 * 1024,
  )
  noise(100 * 1024, 8).copy(base, 3 * 1024 * 1024 + 4000)
  await writeFile(join(dir, 'base.raw'), base)
  const path = (variant: Variant): string => join(dir, `${variant}.qcow2`)

  await convert(dir, path('v2'), 'compat=0.10')
  await convert(dir, path('v3'), 'compat=1.1')
  await convert(dir, path('deflate'), '', true)
  await convert(dir, path('zstd'), 'compression_type=zstd', true)
  await convert(dir, path('small-clusters'), 'cluster_size=512')
  await convert(dir, path('big-clusters'), 'cluster_size=2M')
  await convert(dir, path('refcount-1'), 'refcount_bits=1')
  await convert(dir, path('refcount-64'), 'refcount_bits=64')

  // Extended L2 entries over a qcow2 base: writes and zeroes smaller than a cluster.
  await tool('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-o',
    'extended_l2=on,cluster_size=128k',
    '-b',
    'v3.qcow2',
    '-F',
    'qcow2',
    path('extended-l2'),
  ])
  await io(
    path('extended-l2'),
    'write -P 0x55 100k 7k',
    'write -z 1100k 8k',
    'write -P 0x66 3000k 4k',
    'write -P 0x67 4000k 1k',
  )

  // A three-layer qcow2 chain: deflate base <- middle <- top, with zero clusters on top.
  await tool('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-b',
    'deflate.qcow2',
    '-F',
    'qcow2',
    join(dir, 'chain-middle.qcow2'),
  ])
  await io(
    join(dir, 'chain-middle.qcow2'),
    'write -P 0x11 0 64k',
    'write -P 0x12 1000k 200k',
    'write -P 0x13 4032k 64k',
  )
  await tool('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-o',
    'cluster_size=32k',
    '-b',
    'chain-middle.qcow2',
    '-F',
    'qcow2',
    path('chain-top'),
  ])
  await io(
    path('chain-top'),
    'write -P 0x21 10k 5k',
    'write -z 1024k 128k',
    'write -P 0x22 2000k 100k',
  )

  // Zero clusters over allocated data (preallocated zero) and over nothing (plain zero).
  await copyFile(path('v3'), path('zero-clusters'))
  await io(path('zero-clusters'), 'write -z 128k 128k', 'write -z 2M 64k', 'write -z 1040k 64k')

  // An internal snapshot, then changes to the active layer.
  await copyFile(path('v3'), path('snapshot'))
  await tool('qemu-img', ['snapshot', '-c', 'before', path('snapshot')])
  await io(path('snapshot'), 'write -P 0x31 128k 64k', 'write -P 0x32 3M 4k')

  // A qcow2 overlay on the raw base (the usual cloud-image setup, inverted).
  await tool('qemu-img', [
    'create',
    '-q',
    '-f',
    'qcow2',
    '-b',
    'base.raw',
    '-F',
    'raw',
    path('over-raw'),
  ])
  await io(path('over-raw'), 'write -P 0x41 60k 10k', 'write -z 1M 64k')

  return Object.fromEntries(VARIANTS.map((variant) => [variant, path(variant)])) as Record<
    Variant,
    string
  >
}

/** The guest view of an image according to qemu-img. */
export async function qemuView(path: string): Promise<Buffer> {
  const out = `${path}.expected.raw`
  await tool('qemu-img', ['convert', '-O', 'raw', path, out])
  return readFile(out)
}
