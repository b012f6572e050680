import type { IncomingMessage } from 'node:http'
import { connect, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import { WebSocketServer, type WebSocket } from 'ws'
import { EngineError, quote } from '../engine/errors'
import type { Logger } from '../ipc/logger'
import type { VmHandle } from '../qemu/launcher'

// The graphical console's bridge: the bytes of QEMU's VNC server (a Unix socket in the VM's
// private folder) to and from the renderer's noVNC, over the app's own connection. The bridge
// does not speak RFB; noVNC and QEMU do, end to end.

/** The browser mode's endpoint: `/vnc?vm=JOB_ID`, with the same token and Origin as `/ws`. */
export const VNC_PATH = '/vnc'

/** Bytes queued towards the viewer before QEMU's socket is paused (a slow or stalled viewer). */
const HIGH_WATER_BYTES = 4 * 1024 * 1024
/** Bytes queued below which QEMU's socket resumes. */
const LOW_WATER_BYTES = 1024 * 1024
/** Largest message a viewer may send: RFB client messages are small; clipboard text is capped. */
export const MAX_VIEWER_MESSAGE_BYTES = 1024 * 1024

/**
 * The viewer's end of a bridge: a WebSocket in the browser mode, a MessagePort in Electron.
 * `send` calls `done` once the chunk left (for flow control).
 */
export interface ViewerChannel {
  send(chunk: Buffer, done: () => void): void
  close(reason: string): void
  onMessage(listener: (chunk: Buffer) => void): void
  onClose(listener: () => void): void
}

/** Connect to a VM's VNC socket; rejects with an error naming the socket. */
export function connectVncSocket(path: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect(path)
    socket.once('connect', () => {
      socket.removeAllListeners('error')
      resolve(socket)
    })
    socket.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        new EngineError('IO_ERROR', `Cannot reach the VM's screen at ${path}: ${error.message}.`, {
          path,
          cause: error,
        }),
      ),
    )
  })
}

/**
 * Pipe QEMU's VNC socket and a viewer both ways until either side or the VM ends; then both
 * are closed (no socket outlives its peer). QEMU's socket is paused while more than 4 MiB wait
 * for the viewer. Resolves once both ends are closed.
 */
export function bridgeVnc(vnc: Socket, viewer: ViewerChannel, vm: VmHandle): Promise<void> {
  let queued = 0
  let closing = false
  const closed = new Promise<void>((resolve) => vnc.once('close', () => resolve()))
  const end = (reason: string): void => {
    if (closing) return
    closing = true
    vnc.destroy()
    viewer.close(reason)
  }
  vnc.on('data', (chunk: Buffer) => {
    queued += chunk.length
    if (queued > HIGH_WATER_BYTES) vnc.pause()
    viewer.send(chunk, () => {
      queued -= chunk.length
      if (queued < LOW_WATER_BYTES && vnc.isPaused()) vnc.resume()
    })
  })
  vnc.on('error', () => end("The VM's screen connection failed."))
  vnc.on('close', () => end('The VM closed its screen.'))
  viewer.onMessage((chunk) => {
    if (!closing) vnc.write(chunk)
  })
  viewer.onClose(() => end('The viewer left.'))
  void vm.exited.then(() => end('The VM stopped.'))
  return closed
}

/** A WebSocket as a {@link ViewerChannel}. */
function webSocketViewer(ws: WebSocket): ViewerChannel {
  return {
    send: (chunk, done) => {
      if (ws.readyState === ws.OPEN) ws.send(chunk, { binary: true }, () => done())
      else done()
    },
    // 1000: a normal end; the reason is shown by the viewer.
    close: (reason) => ws.close(1000, reason),
    onMessage: (listener) =>
      ws.on('message', (data: Buffer | ArrayBuffer | Buffer[]) =>
        listener(
          Array.isArray(data)
            ? Buffer.concat(data)
            : Buffer.isBuffer(data)
              ? data
              : Buffer.from(data),
        ),
      ),
    onClose: (listener) => {
      ws.once('close', listener)
      // A protocol error (an oversized frame) ends the bridge; 'close' follows it.
      ws.on('error', listener)
    },
  }
}

/** The browser mode's VNC endpoint, after the server checked the Host, Origin and token. */
export interface VncEndpoint {
  /** Bridge the upgrade to the VM `vmId` of `vms`, or refuse it (404 for a VM not ours). */
  upgrade(request: IncomingMessage, socket: Duplex, head: Buffer, vmId: string | null): void
  /** Bridges open now. */
  readonly openCount: number
  /** Close every bridge. */
  close(): Promise<void>
}

/** Answer an upgrade with an HTTP error and close it. */
export function refuseUpgrade(socket: Duplex, status: number, reason: string): void {
  socket.write(`HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`)
  socket.destroy()
}

/**
 * The VNC endpoint over the running VMs this app launched (`vms`, by launch job id): a VM
 * that is not there (never launched here, or gone) or launched without the in-app display is
 * refused before any byte reaches QEMU.
 */
export function createVncEndpoint(vms: ReadonlyMap<string, VmHandle>, log: Logger): VncEndpoint {
  const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_VIEWER_MESSAGE_BYTES })
  const bridges = new Set<Promise<void>>()
  const viewers = new Set<WebSocket>()

  return {
    upgrade(request, socket, head, vmId) {
      const vm = vmId !== null ? vms.get(vmId) : undefined
      if (!vm) {
        log.warn(
          `refused a screen connection to ${quote(vmId ?? '')}: no VM of this app has that id`,
        )
        return refuseUpgrade(socket, 404, 'Not Found')
      }
      if (vm.vncSocket === null) return refuseUpgrade(socket, 409, 'Conflict')
      connectVncSocket(vm.vncSocket).then(
        (vnc) => {
          if (socket.destroyed) {
            vnc.destroy()
            return
          }
          wss.handleUpgrade(request, socket, head, (ws) => {
            viewers.add(ws)
            const bridge = bridgeVnc(vnc, webSocketViewer(ws), vm).finally(() => {
              viewers.delete(ws)
              bridges.delete(bridge)
            })
            bridges.add(bridge)
          })
        },
        (error: unknown) => {
          log.warn(error instanceof Error ? error.message : String(error))
          refuseUpgrade(socket, 502, 'Bad Gateway')
        },
      )
    },
    get openCount() {
      return bridges.size
    },
    async close() {
      for (const ws of viewers) ws.close(1001, 'The server is stopping.')
      await Promise.all(bridges)
      await new Promise<void>((resolve) => wss.close(() => resolve()))
    },
  }
}
