// Shared setup for the NBD unit tests: real images in a temporary folder, served by a real
// NbdServer on a Unix socket.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, expect } from 'vitest'
import type { Disk } from '../../../main/engine/disk'
import { openImage } from '../../../main/engine/open'
import { createOverlay } from '../../../main/engine/ops/create'
import type { NbdLogEvent } from '../../../main/nbd/export-types'
import { NbdServer, type NbdServerOptions } from '../../../main/nbd/server'
import { tempDir } from '../tools'
import { NbdTestClient } from './nbd-test-client'

export const MIB = 1024 * 1024
export const BASE_SIZE = 4 * MIB
/** The overlay is larger than its base: its upper half reads as zeros from no layer (holes). */
export const OVERLAY_SIZE = 8 * MIB
export const CLUSTER = 64 * 1024

/** {@link basePattern} repeats every 256 sectors: sector s + 256 holds what sector s holds. */
const BASE_PATTERN_PERIOD = 256 * 512
let basePeriod: Buffer | null = null

/** The base's content: byte i of sector s is (s + i) & 0xff, so every sector differs. */
export function basePattern(offset: number, length: number): Buffer {
  if (!basePeriod) {
    // Two periods, so that any phase can be copied in one piece.
    basePeriod = Buffer.alloc(2 * BASE_PATTERN_PERIOD)
    for (let at = 0; at < basePeriod.length; at++)
      basePeriod[at] = (Math.floor(at / 512) + (at % 512)) & 0xff
  }
  const data = Buffer.alloc(length)
  const phase = offset % BASE_PATTERN_PERIOD
  for (let done = 0; done < length; done += BASE_PATTERN_PERIOD) {
    const piece = Math.min(BASE_PATTERN_PERIOD, length - done)
    basePeriod.copy(data, done, phase, phase + piece)
  }
  return data
}

export interface ServedImage {
  folder: string
  socket: string
  disk: Disk
  server: NbdServer
  logs: NbdLogEvent[]
  cleanup(): Promise<void>
}

/**
 * An 8 MiB add-cow overlay over a 4 MiB raw base, served on a Unix socket; with
 * `backing: false`, an 8 MiB overlay without a base (ALL_ALLOCATED: all data, all zeros).
 */
export async function serveOverlay(
  options: {
    backing?: boolean
    readOnly?: boolean
    server?: Partial<NbdServerOptions>
    exportName?: string
  } = {},
): Promise<ServedImage> {
  const folder = await tempDir('addcow-nbd-')
  const overlay = join(folder.path, 'overlay.add-cow')
  if (options.backing ?? true) {
    await writeFile(join(folder.path, 'base.raw'), basePattern(0, BASE_SIZE))
    await createOverlay({
      overlay,
      backing: 'base.raw',
      backingFormat: 'raw',
      size: OVERLAY_SIZE,
      clusterSize: CLUSTER,
    })
  } else {
    await createOverlay({ overlay, size: OVERLAY_SIZE, clusterSize: CLUSTER })
  }
  const disk = await openImage(overlay, { readOnly: options.readOnly ?? false })
  const server = new NbdServer({
    exports: [{ name: options.exportName ?? '', disk, description: 'test overlay' }],
    ...options.server,
  })
  const logs: NbdLogEvent[] = []
  server.on('log', (event: NbdLogEvent) => logs.push(event))
  const socket = join(folder.path, 'nbd.sock')
  await server.listen({ socket })
  return {
    folder: folder.path,
    socket,
    disk,
    server,
    logs,
    async cleanup() {
      await server.close()
      await disk.close()
      await folder.cleanup()
    },
  }
}

/** Options of {@link serveOverlay}. */
export type ServeOptions = Parameters<typeof serveOverlay>[0]

/** A server per test, and its clients, all closed after each test. */
export interface PerTestServer {
  /** Serve a fresh overlay for the current test. */
  setup(options?: ServeOptions): Promise<ServedImage>
  /** A client connected to the current test's server. */
  client(): Promise<NbdTestClient>
  /** A well-behaved client on the current test's server still reads and writes correctly. */
  stillWorks(): Promise<void>
}

/** Register the per-test server of a test file (its afterEach closes everything). */
export function perTestServer(): PerTestServer {
  let served: ServedImage | null = null
  const clients: NbdTestClient[] = []
  afterEach(async () => {
    for (const connection of clients.splice(0)) connection.close()
    await served?.cleanup()
    served = null
  })
  const client = async (): Promise<NbdTestClient> => {
    const connection = await NbdTestClient.connect(served!.socket)
    clients.push(connection)
    return connection
  }
  return {
    async setup(options = {}) {
      served = await serveOverlay(options)
      return served
    },
    client,
    async stillWorks() {
      const good = await client()
      await good.negotiate()
      expect((await good.writeData(3 * MIB, Buffer.alloc(4096, 0x3c))).error).toBe(0)
      expect((await good.read(3 * MIB, 4096)).data).toEqual(Buffer.alloc(4096, 0x3c))
      expect((await good.read(0, 4096)).data).toEqual(basePattern(0, 4096))
      good.close()
    },
  }
}

/** Poll `check` until it holds or `limitMs` passed; returns whether it held (a bound, not a timing). */
export async function eventually(check: () => boolean, limitMs: number): Promise<boolean> {
  const deadline = Date.now() + limitMs
  while (!check()) {
    if (Date.now() > deadline) return false
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  return true
}

/** The seed of a seeded attack: ADDCOW_ATTACK_SEED when set (to replay a failure), else fresh. */
export function attackSeed(): number {
  const fixed = process.env.ADDCOW_ATTACK_SEED
  return fixed ? Number(fixed) : Math.floor(Math.random() * 2 ** 31)
}
