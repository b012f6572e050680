// The graphical console end to end below the renderer: the browser mode's server launches a
// real QEMU (TCG) with the in-app display, and an RFB client speaking through the server's
// /vnc endpoint (the bytes noVNC would get) must see exactly the picture QEMU's own
// `screendump` writes: SeaBIOS's text, pixel for pixel.
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { Library } from '../../../main/engine/library'
import { createOverlay } from '../../../main/engine/ops/create'
import { startWebServer, type WebServer } from '../../../main/web/server'
import { requireTools, tempDir, tool } from '../../helpers/tools'

const FIXTURES = fileURLToPath(new URL('../../fixtures/boot/', import.meta.url))
const CONSOLE_LINE = 'addcow boot test: sector 2048 written through int 13h'

const available = requireTools('qemu-system-x86_64', 'nasm')
const describeQemu = available ? describe : describe.skip

let folder: { path: string; cleanup: () => Promise<void> }
let server: WebServer
let headers: Record<string, string>

beforeAll(async () => {
  folder = await tempDir('addcow-vnc-console-')
  const renderer = join(folder.path, 'renderer')
  await mkdir(renderer)
  await writeFile(join(renderer, 'index.html'), '<!doctype html><title>AddCow Studio</title>')
  server = await startWebServer({
    rendererDir: renderer,
    version: '0.0.0-test',
    library: new Library(join(folder.path, 'data', 'library.json')),
  })
  headers = {
    Origin: `http://127.0.0.1:${server.port}`,
    Cookie: `addcow-token-${server.port}=${server.token}`,
  }
})

afterAll(async () => {
  await server?.close()
  await folder?.cleanup()
})

/** Bytes from a WebSocket, read as a stream: `take(n)` resolves with the next n bytes. */
function byteReader(socket: WebSocket): (count: number) => Promise<Buffer> {
  let buffered = Buffer.alloc(0)
  let waiting: { count: number; resolve: (data: Buffer) => void } | null = null
  const deliver = (): void => {
    if (waiting && buffered.length >= waiting.count) {
      const { count, resolve } = waiting
      waiting = null
      const data = buffered.subarray(0, count)
      buffered = buffered.subarray(count)
      resolve(data)
    }
  }
  socket.on('message', (data: Buffer) => {
    buffered = Buffer.concat([buffered, data])
    deliver()
  })
  return (count) =>
    new Promise((resolve) => {
      waiting = { count, resolve }
      deliver()
    })
}

/**
 * The whole screen through an RFB 3.8 session (RFC 6143): no authentication (the socket is
 * private), 32-bit true colour, raw encoding, one full update. Returns RGB bytes.
 */
async function rfbScreen(
  socket: WebSocket,
  take: (count: number) => Promise<Buffer>,
): Promise<{ width: number; height: number; rgb: Buffer }> {
  expect((await take(12)).toString()).toBe('RFB 003.008\n')
  socket.send(Buffer.from('RFB 003.008\n'))
  const types = await take((await take(1))[0]!)
  expect([...types]).toContain(1)
  socket.send(Buffer.from([1]))
  expect((await take(4)).readUInt32BE(0)).toBe(0)
  socket.send(Buffer.from([1])) // ClientInit: shared
  const init = await take(24)
  const width = init.readUInt16BE(0)
  const height = init.readUInt16BE(2)
  await take(init.readUInt32BE(20)) // the desktop name
  const format = Buffer.alloc(20)
  format.writeUInt8(0, 0) // SetPixelFormat
  format.writeUInt8(32, 4) // bits per pixel
  format.writeUInt8(24, 5) // depth
  format.writeUInt8(0, 6) // little endian
  format.writeUInt8(1, 7) // true colour
  format.writeUInt16BE(255, 8)
  format.writeUInt16BE(255, 10)
  format.writeUInt16BE(255, 12)
  format.writeUInt8(16, 14) // red shift
  format.writeUInt8(8, 15) // green shift
  format.writeUInt8(0, 16) // blue shift
  const encodings = Buffer.from([2, 0, 0, 1, 0, 0, 0, 0]) // SetEncodings: raw only
  const request = Buffer.alloc(10)
  request.writeUInt8(3, 0) // FramebufferUpdateRequest, not incremental
  request.writeUInt16BE(width, 6)
  request.writeUInt16BE(height, 8)
  socket.send(Buffer.concat([format, encodings, request]))

  const rgb = Buffer.alloc(width * height * 3)
  let covered = 0
  while (covered < width * height) {
    const type = (await take(1))[0]
    expect(type, 'a FramebufferUpdate').toBe(0)
    const rectangles = (await take(3)).readUInt16BE(1)
    for (let index = 0; index < rectangles; index++) {
      const head = await take(12)
      const [x, y, w, h] = [0, 2, 4, 6].map((offset) => head.readUInt16BE(offset)) as [
        number,
        number,
        number,
        number,
      ]
      expect(head.readInt32BE(8), 'raw encoding').toBe(0)
      const pixels = await take(w * h * 4)
      for (let row = 0; row < h; row++) {
        for (let column = 0; column < w; column++) {
          const from = (row * w + column) * 4
          const to = ((y + row) * width + x + column) * 3
          rgb[to] = pixels[from + 2]!
          rgb[to + 1] = pixels[from + 1]!
          rgb[to + 2] = pixels[from]!
        }
      }
      covered += w * h
    }
  }
  return { width, height, rgb }
}

/** A binary PPM (P6, maxval 255), as QEMU's screendump writes it. */
function parsePpm(file: Buffer): { width: number; height: number; rgb: Buffer } {
  const header = /^P6\s+(\d+)\s+(\d+)\s+255\s/.exec(file.subarray(0, 64).toString('latin1'))
  if (!header) throw new Error('not a binary PPM')
  return {
    width: Number(header[1]),
    height: Number(header[2]),
    rgb: file.subarray(header[0].length),
  }
}

/** The smallest box holding every pixel where two RGB pictures of one size differ, or null. */
function differingBox(
  picture: { width: number; height: number; rgb: Buffer },
  other: Buffer,
): { left: number; top: number; right: number; bottom: number } | null {
  let box: { left: number; top: number; right: number; bottom: number } | null = null
  for (let y = 0; y < picture.height; y++) {
    for (let x = 0; x < picture.width; x++) {
      const at = (y * picture.width + x) * 3
      if (picture.rgb.compare(other, at, at + 3, at, at + 3) === 0) continue
      box = box
        ? {
            left: Math.min(box.left, x),
            top: Math.min(box.top, y),
            right: Math.max(box.right, x + 1),
            bottom: Math.max(box.bottom, y + 1),
          }
        : { left: x, top: y, right: x + 1, bottom: y + 1 }
    }
  }
  return box
}

/** One request over the IPC WebSocket, as the renderer sends it. */
function ipc(socket: WebSocket, id: number, channel: string, payload: unknown): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const onMessage = (data: Buffer): void => {
      const frame = JSON.parse(String(data)) as {
        type: string
        id?: number
        result?: { ok: boolean; value?: unknown; error?: { message: string } }
      }
      if (frame.type !== 'response' || frame.id !== id) return
      socket.off('message', onMessage)
      if (frame.result?.ok) resolve(frame.result.value)
      else reject(new Error(frame.result?.error?.message))
    }
    socket.on('message', onMessage)
    socket.send(JSON.stringify({ type: 'request', id, channel, payload }))
  })
}

/**
 * Open a WebSocket to the server. `onCreate` runs before any message can arrive: QEMU's greeting
 * may come in the same packet as the upgrade's answer, and ws delivers it right after 'open',
 * before code awaiting this promise could listen.
 */
function open(path: string, onCreate?: (socket: WebSocket) => void): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://127.0.0.1:${server.port}${path}`, { headers })
    onCreate?.(socket)
    socket.once('open', () => resolve(socket))
    socket.once('error', reject)
  })
}

describeQemu('the graphical console through the browser mode', () => {
  it('has keys.bin assembled from keys.asm', async () => {
    const output = join(folder.path, 'keys.bin')
    await tool('nasm', ['-f', 'bin', '-o', output, join(FIXTURES, 'keys.asm')])
    expect(await readFile(output)).toEqual(await readFile(join(FIXTURES, 'keys.bin')))
  })

  it("shows through /vnc exactly what QEMU's screendump shows", async () => {
    const disk = Buffer.alloc(2 * 1024 * 1024)
    ;(await readFile(join(FIXTURES, 'boot.bin'))).copy(disk, 0)
    await writeFile(join(folder.path, 'base.raw'), disk)
    const overlay = join(folder.path, 'screen.add-cow')
    await createOverlay({ overlay, backing: 'base.raw', backingFormat: 'raw' })

    const control = await open('/ws')
    let serial = ''
    control.on('message', (data: Buffer) => {
      const frame = JSON.parse(String(data)) as {
        type: string
        event?: string
        payload?: { stream: string; text: string }
      }
      if (frame.event === 'qemu:console-output' && frame.payload?.stream === 'serial')
        serial += frame.payload.text
    })
    // Without isa-debug-exit the boot sector halts after its line: the screen stands still.
    const { job } = (await ipc(control, 1, 'qemu:launch-vm', {
      path: overlay,
      display: 'app',
      memoryMiB: 64,
      cpus: 1,
      network: 'none',
    })) as { job: { id: string } }
    try {
      while (!serial.includes(CONSOLE_LINE))
        await new Promise((resolve) => setTimeout(resolve, 100))
      const vm = server.core.vms.get(job.id)
      expect(vm?.vncSocket).toMatch(/\/vnc\.sock$/)

      let take: ((count: number) => Promise<Buffer>) | undefined
      const viewer = await open(`/vnc?vm=${job.id}`, (socket) => (take = byteReader(socket)))
      const seen = await rfbScreen(viewer, take!)
      viewer.close()
      const dump = join(folder.path, 'screen.ppm')
      await vm!.qmp!.execute('screendump', { filename: dump })
      const dumped = parsePpm(await readFile(dump))

      expect({ width: seen.width, height: seen.height }).toEqual({
        width: dumped.width,
        height: dumped.height,
      })
      // SeaBIOS's banner and "Booting from Hard Disk...": text, not a blank screen.
      let lit = 0
      for (let index = 0; index < seen.rgb.length; index += 3)
        if (seen.rgb[index]! + seen.rgb[index + 1]! + seen.rgb[index + 2]! > 192) lit++
      expect(lit).toBeGreaterThan(1000)
      // Pixel for pixel, but for the text cursor: QEMU's VGA blinks it, so the two pictures,
      // taken moments apart, may differ inside that one character cell (9x16 at most) and
      // nowhere else.
      const differing = differingBox(seen, dumped.rgb)
      if (differing) {
        expect(differing.right - differing.left, 'differing columns').toBeLessThanOrEqual(9)
        expect(differing.bottom - differing.top, 'differing rows').toBeLessThanOrEqual(16)
      }
    } finally {
      await ipc(control, 2, 'qemu:stop-vm', { jobId: job.id, force: true })
      while (server.core.vms.has(job.id)) await new Promise((resolve) => setTimeout(resolve, 50))
      control.close()
    }
  }, 120_000)
})
