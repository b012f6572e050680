// Shared setup for the NBD unit tests: real images in a temporary folder, served by a real
// NbdServer on a Unix socket.
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { Disk } from '../../../main/engine/disk'
import { openImage } from '../../../main/engine/open'
import { createOverlay } from '../../../main/engine/ops/create'
import type { NbdLogEvent } from '../../../main/nbd/export-types'
import { NbdServer, type NbdServerOptions } from '../../../main/nbd/server'
import { tempDir } from '../../helpers/tools'

export const MIB = 1024 * 1024
export const BASE_SIZE = 4 * MIB
/** The overlay is larger than its base: its upper half reads as zeros from no layer (holes). */
export const OVERLAY_SIZE = 8 * MIB
export const CLUSTER = 64 * 1024

/** The base's content: byte i of sector s is (s + i) & 0xff, so every sector differs. */
export function basePattern(offset: number, length: number): Buffer {
  const data = Buffer.alloc(length)
  for (let index = 0; index < length; index++) {
    const at = offset + index
    data[index] = (Math.floor(at / 512) + (at % 512)) & 0xff
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
