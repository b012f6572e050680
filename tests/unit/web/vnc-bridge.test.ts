import { createServer, type Server, type Socket } from 'node:net'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest'
import WebSocket from 'ws'
import { Library } from '../../../main/engine/library'
import type { VmExit, VmHandle } from '../../../main/qemu/launcher'
import { startWebServer, type WebServer } from '../../../main/web/server'
import { tempDir } from '../../helpers/tools'
import { recordingLogger } from '../ipc/helpers'

// The browser mode's screen endpoint (/vnc?vm=JOB): the same token and Origin as /ws, only VMs
// this app launched, bytes both ways, and no socket left behind when either side goes. QEMU's
// VNC server is stood in for by a Unix socket server that greets like RFB and echoes; the
// real QEMU is in tests/interop/qemu/vnc-console.test.ts and tests/e2e/launch-display.spec.ts.

const GREETING = 'RFB 003.008\n'

/** A VNC socket: greets, echoes, and can stream without end; records its connections. */
interface FakeVnc {
  path: string
  server: Server
  connections: Set<Socket>
  /** Resolves when the next connection closes. */
  nextClose: () => Promise<void>
  stream: boolean
}

async function fakeVnc(path: string): Promise<FakeVnc> {
  const connections = new Set<Socket>()
  let onClose: (() => void) | null = null
  const fake: FakeVnc = {
    path,
    connections,
    stream: false,
    nextClose: () => new Promise((resolve) => (onClose = resolve)),
    server: createServer((socket) => {
      connections.add(socket)
      socket.on('error', () => undefined)
      socket.write(GREETING)
      socket.on('data', (chunk) => socket.write(chunk))
      let timer: NodeJS.Timeout | undefined
      if (fake.stream) timer = setInterval(() => socket.write(Buffer.alloc(256 * 1024, 0x5a)), 5)
      socket.on('close', () => {
        clearInterval(timer)
        connections.delete(socket)
        onClose?.()
      })
    }),
  }
  await new Promise<void>((resolve) => fake.server.listen(path, resolve))
  return fake
}

/** A launched VM as the endpoint sees it: its screen's socket and its end. */
function fakeVm(vncSocket: string | null): VmHandle & { end: () => void } {
  let end: () => void = () => undefined
  const exited = new Promise<VmExit>(
    (resolve) => (end = () => resolve({ code: 0, signal: null, status: 0 })),
  )
  return { vncSocket, exited, end: () => end() } as unknown as VmHandle & { end: () => void }
}

let cleanup: () => Promise<void>
let dir: string
let server: WebServer
let vms: Map<string, VmHandle>
let vnc: FakeVnc
let headers: Record<string, string>

beforeAll(async () => {
  const temp = await tempDir('addcow-vnc-')
  cleanup = temp.cleanup
  dir = temp.path
  const renderer = join(dir, 'renderer')
  await mkdir(renderer, { recursive: true })
  await writeFile(join(renderer, 'index.html'), '<!doctype html><title>AddCow Studio</title>')
  server = await startWebServer({
    rendererDir: renderer,
    version: '0.0.0-test',
    library: new Library(join(dir, 'data', 'library.json')),
    log: recordingLogger(),
  })
  // The handlers fill this map as VMs start; the test puts its stand-ins there the same way.
  vms = server.core.vms as Map<string, VmHandle>
  vnc = await fakeVnc(join(dir, 'vnc.sock'))
  headers = {
    Origin: `http://127.0.0.1:${server.port}`,
    Cookie: `addcow-token-${server.port}=${server.token}`,
  }
})

beforeEach(() => {
  vms.clear()
  vnc.stream = false
})

afterAll(async () => {
  await server.close()
  await new Promise((resolve) => vnc.server.close(resolve))
  await cleanup()
})

/** Open the screen endpoint; resolves with the socket (and its first message) or the refusal. */
function openScreen(
  query: string,
  with_: Record<string, string> = headers,
): Promise<{ socket: WebSocket; first: Buffer } | { status: number }> {
  return new Promise((resolve) => {
    const socket = new WebSocket(`ws://127.0.0.1:${server.port}/vnc${query}`, { headers: with_ })
    socket.once('message', (data: Buffer) => resolve({ socket, first: data }))
    socket.on('unexpected-response', (_request, response) =>
      resolve({ status: response.statusCode ?? 0 }),
    )
    socket.on('error', () => resolve({ status: -1 }))
  })
}

describe('the screen endpoint', () => {
  it('refuses a connection without the token or from another origin', async () => {
    vms.set('vm1', fakeVm(vnc.path))
    expect(await openScreen('?vm=vm1', { Origin: headers.Origin! })).toEqual({ status: 401 })
    expect(
      await openScreen('?vm=vm1', { ...headers, Cookie: `addcow-token-${server.port}=wrong` }),
    ).toEqual({ status: 401 })
    expect(await openScreen('?vm=vm1', { ...headers, Origin: 'http://evil.example' })).toEqual({
      status: 403,
    })
    expect(vnc.connections.size).toBe(0)
  })

  it('refuses a VM this app did not launch, one without a screen, and a screen that is gone', async () => {
    vms.set('headless', fakeVm(null))
    vms.set('gone', fakeVm(join(dir, 'no-such.sock')))
    expect(await openScreen('?vm=nobody')).toEqual({ status: 404 })
    expect(await openScreen('')).toEqual({ status: 404 })
    expect(await openScreen('?vm=headless')).toEqual({ status: 409 })
    expect(await openScreen('?vm=gone')).toEqual({ status: 502 })
    expect(vnc.connections.size).toBe(0)
  })

  it("carries bytes both ways between the viewer and the VM's screen", async () => {
    vms.set('vm1', fakeVm(vnc.path))
    const opened = await openScreen('?vm=vm1')
    if (!('socket' in opened)) throw new Error(`refused with ${opened.status}`)
    expect(opened.first.toString()).toBe(GREETING)
    const echo = new Promise<Buffer>((resolve) => opened.socket.once('message', resolve))
    opened.socket.send(Buffer.from('RFB 003.008\n'))
    expect((await echo).toString()).toBe('RFB 003.008\n')
    const closed = vnc.nextClose()
    opened.socket.close()
    await closed
    expect(vnc.connections.size).toBe(0)
  })

  it("closes QEMU's side when the viewer hangs up mid-stream", async () => {
    vnc.stream = true
    vms.set('vm1', fakeVm(vnc.path))
    const opened = await openScreen('?vm=vm1')
    if (!('socket' in opened)) throw new Error(`refused with ${opened.status}`)
    let received = 0
    await new Promise<void>((resolve) =>
      opened.socket.on('message', (data: Buffer) => {
        received += data.length
        if (received > 2 * 1024 * 1024) resolve()
      }),
    )
    expect(vnc.connections.size).toBe(1)
    const closed = vnc.nextClose()
    // No closing handshake: the TCP connection just ends, as when a tab is killed.
    opened.socket.terminate()
    await closed
    expect(vnc.connections.size).toBe(0)
  })

  it('closes the viewer, with the reason, when the VM ends', async () => {
    const vm = fakeVm(vnc.path)
    vms.set('vm1', vm)
    const opened = await openScreen('?vm=vm1')
    if (!('socket' in opened)) throw new Error(`refused with ${opened.status}`)
    const closedViewer = new Promise<{ code: number; reason: string }>((resolve) =>
      opened.socket.once('close', (code, reason) => resolve({ code, reason: reason.toString() })),
    )
    const closedVnc = vnc.nextClose()
    vm.end()
    expect(await closedViewer).toEqual({ code: 1000, reason: 'The VM stopped.' })
    await closedVnc
    expect(vnc.connections.size).toBe(0)
  })
})
