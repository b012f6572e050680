// The addon's zero-copy sends (sendParts, waitWritable, dupSocket, shutdownSocket), against a
// real Unix socket: what arrives is compared byte for byte with what was asked for.
import { closeSync, openSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { createServer, connect, type Server, type Socket } from 'node:net'
import { join } from 'node:path'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { nativeStatus, zeroCopySend } from '../../../main/engine/native/index'
import { pattern } from '../../helpers/images'
import { tempDir } from '../../helpers/tools'

const MIB = 1024 * 1024
const ZEROS = -1
const BUFFER = -2

let dir: string
let cleanup: () => Promise<void>
let server: Server | null = null
const opened: number[] = []
beforeEach(async () => {
  ;({ path: dir, cleanup } = await tempDir('addcow-native-send-'))
})
afterEach(async () => {
  server?.close()
  server = null
  for (const fd of opened.splice(0)) closeSync(fd)
  await cleanup()
})

const status = nativeStatus()
if (!status.loaded && process.env.CI === 'true')
  throw new Error(`CI needs the native addon: ${status.reason}`)

/** A connected pair: the server's end as a descriptor of our own, the client's as a socket. */
async function pair(): Promise<{ fd: number; client: Socket; serverSide: Socket }> {
  const path = join(dir, 'send.sock')
  const accepted = new Promise<Socket>((resolve) => {
    server = createServer(resolve)
    server.listen(path)
  })
  await new Promise<void>((resolve) => server!.once('listening', resolve))
  const client = connect(path)
  const serverSide = await accepted
  const handle = (serverSide as unknown as { _handle: { fd: number } })._handle
  const fd = zeroCopySend()!.dupSocket(handle.fd)
  opened.push(fd)
  return { fd, client, serverSide }
}

/** Everything the client receives until the server's end closes. */
function received(client: Socket): Promise<Buffer> {
  const chunks: Buffer[] = []
  client.on('data', (chunk: Buffer) => chunks.push(chunk))
  return new Promise((resolve) => client.once('end', () => resolve(Buffer.concat(chunks))))
}

/** Send `items` whole, waiting for room on the event loop whenever the socket is full. */
async function sendAll(
  fd: number,
  items: number[],
  buffers: Uint8Array[],
): Promise<{ calls: number; failures: number[] }> {
  const send = zeroCopySend()!
  let left = 0
  for (let index = 2; index < items.length; index += 3) left += items[index]!
  let calls = 0
  const failures: number[] = []
  while (left > 0) {
    calls++
    const result = await send.sendParts(fd, Float64Array.from(items), buffers, 1)
    const sent = typeof result === 'number' ? result : result[0]!
    if (typeof result !== 'number') failures.push(...result.slice(1))
    left -= sent
    if (left === 0) break
    // Skip what went out (whole items only here: the tests' buffers are sent in one piece).
    let skip = sent
    const rest: number[] = []
    for (let index = 0; index < items.length; index += 3) {
      const [kind, a, b] = [items[index]!, items[index + 1]!, items[index + 2]!]
      if (skip >= b) skip -= b
      else {
        if (skip > 0 && kind === BUFFER) throw new Error('a buffer was cut')
        rest.push(kind, kind >= 0 ? a + skip : a, b - skip)
        skip = 0
      }
    }
    items = rest
    await send.waitWritable(fd)
  }
  return { calls, failures }
}

describe.runIf(status.loaded)('zero-copy sends', () => {
  it('sends buffers, zeros and file ranges in order, zeros past a file’s end', async () => {
    const data = pattern(3 * MIB, 7)
    await writeFile(join(dir, 'data'), data)
    const file = openSync(join(dir, 'data'), 'r')
    opened.push(file)
    const { fd, client, serverSide } = await pair()
    const got = received(client)
    const head = Buffer.from('header')
    const tail = Buffer.from('tail')
    const items = [
      ...[BUFFER, 0, head.length],
      ...[file, 100, 2 * MIB],
      ...[ZEROS, 0, 200_000],
      // Starts 10 bytes before the file's end: 10 bytes of data, then zeros.
      ...[file, 3 * MIB - 10, 1000],
      ...[BUFFER, 1, tail.length],
    ]
    await sendAll(fd, items, [head, tail])
    serverSide.end()
    const expected = Buffer.concat([
      head,
      data.subarray(100, 100 + 2 * MIB),
      Buffer.alloc(200_000),
      data.subarray(3 * MIB - 10),
      Buffer.alloc(990),
      tail,
    ])
    const bytes = await got
    expect(bytes.length).toBe(expected.length)
    expect(bytes.equals(expected)).toBe(true)
  })

  it('stops when the socket stays full, and goes on once the client reads', async () => {
    const data = pattern(8 * MIB, 3)
    await writeFile(join(dir, 'data'), data)
    const file = openSync(join(dir, 'data'), 'r')
    opened.push(file)
    const { fd, client, serverSide } = await pair()
    client.pause()
    const first = await zeroCopySend()!.sendParts(fd, Float64Array.from([file, 0, 8 * MIB]), [], 5)
    // The socket's buffer holds far less than 8 MiB: the call returned, no thread kept waiting.
    expect(typeof first).toBe('number')
    expect(first as number).toBeGreaterThan(0)
    expect(first as number).toBeLessThan(8 * MIB)
    const got = received(client)
    client.resume()
    const { calls } = await sendAll(fd, [file, first as number, 8 * MIB - (first as number)], [])
    expect(calls).toBeGreaterThanOrEqual(1)
    serverSide.end()
    expect((await got).equals(data)).toBe(true)
  })

  it('sends an unreadable range as zeros and reports it, then goes on', async () => {
    // sendfile refuses a directory (EINVAL), and pread then fails with EISDIR: a file that
    // cannot be read, as a failing disk's EIO would be.
    await mkdir(join(dir, 'folder'))
    const folder = openSync(join(dir, 'folder'), 'r')
    opened.push(folder)
    const { fd, client, serverSide } = await pair()
    const got = received(client)
    const after = Buffer.from('after')
    const { failures } = await sendAll(fd, [folder, 0, 70_000, BUFFER, 0, after.length], [after])
    serverSide.end()
    expect(failures[0]).toBe(0)
    expect(failures[1]).toBe(21) // EISDIR
    expect((await got).equals(Buffer.concat([Buffer.alloc(70_000), after]))).toBe(true)
  })

  it('fails with the socket’s error when the client is gone, and shutdownSocket wakes a wait', async () => {
    const data = pattern(4 * MIB, 5)
    await writeFile(join(dir, 'data'), data)
    const file = openSync(join(dir, 'data'), 'r')
    opened.push(file)
    const { fd, client } = await pair()
    client.pause()
    const send = zeroCopySend()!
    const first = (await send.sendParts(fd, Float64Array.from([file, 0, 4 * MIB]), [], 1)) as number
    expect(first).toBeLessThan(4 * MIB)
    const waiting = send.waitWritable(fd)
    send.shutdownSocket(fd)
    await waiting
    client.destroy()
    await expect(
      send.sendParts(fd, Float64Array.from([file, first, 4 * MIB - first]), [], 1),
    ).rejects.toMatchObject({ code: expect.stringMatching(/^(EPIPE|ECONNRESET|ENOTCONN)$/) })
  })

  it('refuses items it cannot trust', async () => {
    const send = zeroCopySend()!
    const { fd } = await pair()
    expect(() => send.sendParts(fd, Float64Array.from([BUFFER, 0, 5]), [], 1)).toThrow(RangeError)
    expect(() =>
      send.sendParts(fd, Float64Array.from([BUFFER, 0, 9]), [Buffer.alloc(5)], 1),
    ).toThrow(RangeError)
    expect(() => send.sendParts(fd, Float64Array.from([-3, 0, 5]), [], 1)).toThrow(RangeError)
    expect(() => send.sendParts(fd, Float64Array.from([3, -1, 5]), [], 1)).toThrow(RangeError)
    expect(() => send.sendParts(fd, Float64Array.from([3, 0]), [], 1)).toThrow(TypeError)
  })
})
