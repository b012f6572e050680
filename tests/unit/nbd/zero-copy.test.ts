// Read replies sent from the files (sendfile, Disk.mapFiles) instead of read into memory: the
// same bytes, the same chunks; a file that fails while it is sent ends the reply with an error;
// a client that stops reading holds no thread-pool thread.
import { mkdir, open } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { Disk } from '../../../main/engine/disk'
import { EngineError } from '../../../main/engine/errors'
import { nativeStatus, setZeroCopyEnabled } from '../../../main/engine/native/index'
import { COMMAND, COMMAND_FLAG, NBD_ERROR } from '../../../main/nbd/protocol'
import { NbdServer } from '../../../main/nbd/server'
import { CLUSTER, MIB, OVERLAY_SIZE, perTestServer } from '../../helpers/nbd/fixtures'
import { NbdTestClient } from '../../helpers/nbd/nbd-test-client'
import { pattern } from '../../helpers/images'

const nbd = perTestServer()
const servers: NbdServer[] = []
afterEach(async () => {
  setZeroCopyEnabled(true)
  for (const server of servers.splice(0)) await server.close()
})

const status = nativeStatus()
if (!status.loaded && process.env.CI === 'true')
  throw new Error(`CI needs the native addon: ${status.reason}`)

/** `disk`, with its readInto and mapFiles replaced where given. */
function wrapped(disk: Disk, replace: Partial<Pick<Disk, 'readInto' | 'mapFiles'>>): Disk {
  return new Proxy(disk, {
    get(target, property, receiver) {
      if (property in replace) return replace[property as keyof typeof replace]
      const value = Reflect.get(target, property, receiver) as unknown
      return typeof value === 'function' ? (value as () => unknown).bind(target) : value
    },
  })
}

/**
 * `disk`, refusing to read ranges of 128 KiB or more into memory: those reads can only be sent
 * from the files.
 */
function refusingBigReads(disk: Disk): Disk {
  return wrapped(disk, {
    readInto: async (target, offset) => {
      if (target.length >= 128 * 1024)
        throw new EngineError('IO_ERROR', `read ${target.length} at ${offset} into memory`)
      return disk.readInto(target, offset)
    },
  })
}

/** Serve `disk` on its own socket in `folder`; the server closes after the test. */
async function serve(folder: string, disk: Disk, name: string): Promise<string> {
  const server = new NbdServer({ exports: [{ name: '', disk }] })
  server.on('log', () => undefined)
  servers.push(server)
  const socket = join(folder, `${name}.sock`)
  await server.listen({ socket })
  return socket
}

/** Reads that cover data, holes, the base's end and unaligned edges, at several sizes. */
const READS: [number, number, number][] = [
  [0, MIB, 0],
  [CLUSTER - 7, 300_000, 0],
  [3 * MIB + 12_345, 2 * MIB, 0],
  [0, OVERLAY_SIZE, 0],
  [MIB - 100, 1024 * 1024, COMMAND_FLAG.DF],
  [5 * MIB, 64 * 1024, 0],
]

describe.runIf(status.loaded)('NBD reads sent from the files', () => {
  it('carry the same bytes and holes as reads into memory, structured or simple', async () => {
    const served = await nbd.setup()
    const writer = await nbd.client()
    await writer.negotiate()
    for (let cluster = 0; cluster < 128; cluster += 7)
      expect((await writer.writeData(cluster * CLUSTER + 100, pattern(5000, cluster))).error).toBe(
        0,
      )
    const direct = await serve(served.folder, refusingBigReads(served.disk), 'direct')
    for (const structured of [true, false]) {
      const copied = await nbd.client()
      await copied.negotiate({ structured, meta: false })
      const sent = await NbdTestClient.connect(direct)
      await sent.negotiate({ structured, meta: false })
      try {
        for (const [offset, length, flags] of READS) {
          // One frame longer than a piece (a simple reply) is streamed from memory; DF needs
          // structured replies.
          if (!structured && (length > MIB || flags !== 0)) continue
          const expected = await copied.read(offset, length, flags)
          const got = await sent.read(offset, length, flags)
          const what = `${structured ? 'structured' : 'simple'} read of ${length} at ${offset}`
          expect(got.error, what).toBe(0)
          expect(got.data.equals(expected.data), what).toBe(true)
          expect(got.holes, what).toEqual(expected.holes)
        }
      } finally {
        sent.close()
      }
    }
    // Switched off, the same reads go through readInto, which refuses them: the reads above
    // were sent from the files.
    setZeroCopyEnabled(false)
    const copying = await NbdTestClient.connect(direct)
    await copying.negotiate()
    expect((await copying.read(0, MIB)).error).toBe(NBD_ERROR.EIO)
    copying.close()
  })

  it('are sent from the files over TCP too', async () => {
    const served = await nbd.setup()
    const server = new NbdServer({ exports: [{ name: '', disk: refusingBigReads(served.disk) }] })
    server.on('log', () => undefined)
    servers.push(server)
    const address = await server.listen({ port: 0 })
    if (address.kind !== 'tcp') throw new Error('not listening on TCP')
    const socket = connect({ host: address.host, port: address.port })
    await new Promise((resolve, reject) => socket.once('connect', resolve).once('error', reject))
    const client = NbdTestClient.fromSocket(socket)
    try {
      await client.negotiate()
      for (const [offset, length] of [
        [0, 4 * MIB],
        [MIB + 3, 3 * MIB],
      ] as const) {
        const got = await client.read(offset, length)
        expect(got.error).toBe(0)
        expect(got.data.equals(await served.disk.read(offset, length))).toBe(true)
      }
    } finally {
      client.close()
    }
  })

  it('end a reply with an error when a file fails while it is sent; a simple reply is cut', async () => {
    const served = await nbd.setup()
    const folder = join(served.folder, 'unreadable')
    await mkdir(folder)
    const handle = await open(folder, 'r')
    try {
      // From 2 MiB on, the "file" is a folder: sendfile and pread both fail (EISDIR).
      const failing = wrapped(served.disk, {
        mapFiles: (offset, length) => {
          const mapping = served.disk.mapFiles!(offset, length)
          if (!mapping || offset + length <= 2 * MIB) return mapping
          return { pieces: [handle.fd, 0, length], release: mapping.release }
        },
      })
      const socket = await serve(served.folder, failing, 'failing')
      const client = await NbdTestClient.connect(socket)
      await client.negotiate()
      const read = await client.read(0, 4 * MIB)
      expect(read.error).toBe(NBD_ERROR.EIO)
      expect(read.message).toMatch(
        /reading 4194304 bytes at offset 0 of .*overlay\.add-cow failed: EISDIR/,
      )
      expect(read.chunks.at(-1)!.flags & 1).toBe(1)
      // The first 2 MiB arrived as data; the connection goes on.
      const good = await client.read(0, 256 * 1024)
      expect(good.error).toBe(0)
      expect(good.data.equals(read.data.subarray(0, 256 * 1024))).toBe(true)
      client.close()
      const simple = await NbdTestClient.connect(socket)
      await simple.negotiate({ structured: false, meta: false })
      simple.sendRequest({ type: COMMAND.READ, offset: 3 * MIB, length: 512 * 1024 })
      await simple.closed
    } finally {
      await handle.close()
    }
  })

  it('serve other clients while some read none of their replies', async () => {
    const served = await nbd.setup()
    // More stalled clients than the thread pool has threads (4 by default).
    const stalled: NbdTestClient[] = []
    for (let index = 0; index < 6; index++) {
      const client = await nbd.client()
      await client.negotiate()
      client.socket.pause()
      for (let request = 0; request < 16; request++)
        client.sendRequest({ type: COMMAND.READ, offset: request * 256 * 1024, length: MIB })
      stalled.push(client)
    }
    await new Promise((resolve) => setTimeout(resolve, 200))
    const reader = await nbd.client()
    await reader.negotiate()
    const expected = await served.disk.read(0, 4 * MIB)
    for (let round = 0; round < 4; round++)
      expect((await reader.read(0, 4 * MIB)).data.equals(expected)).toBe(true)
    await nbd.stillWorks()
  })
})
