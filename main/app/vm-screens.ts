import { ipcMain, MessageChannelMain, type IpcMainEvent, type MessagePortMain } from 'electron'
import { z } from 'zod'
import { SCREEN_PORT_CHANNELS } from '../../shared/ipc/channels'
import { senderOf } from '../ipc/electron-binding'
import type { IpcCore, RequestSender } from '../ipc/index'
import { bridgeVnc, connectVncSocket, type ViewerChannel } from '../web/vnc-bridge'

// The Electron app's graphical console: a VM's VNC socket bridged to the renderer over a
// MessagePort (MessageChannelMain). No listening socket at all, so nothing else on the machine
// can reach the screen, and no token is needed; the browser mode's /vnc WebSocket and this use
// the same bridge (main/web/vnc-bridge.ts).

const ScreenRequestSchema = z.strictObject({
  jobId: z.string().min(1).max(64),
  nonce: z.string().regex(/^[A-Za-z0-9_-]{8,64}$/),
})

/** A MessagePortMain as the bridge's viewer: bytes as Uint8Array, `{ closed }` to say goodbye. */
function portViewer(port: MessagePortMain): ViewerChannel {
  return {
    // A port has no flow control: the renderer takes what comes (the same machine).
    send: (chunk, done) => {
      port.postMessage(new Uint8Array(chunk))
      done()
    },
    close: (reason) => {
      port.postMessage({ closed: reason })
      port.close()
    },
    onMessage: (listener) => {
      // Bytes only (a Uint8Array, or its buffer); the page's `{ close }` is followed by 'close'.
      port.on('message', ({ data }: { data: unknown }) => {
        if (ArrayBuffer.isView(data))
          listener(Buffer.from(data.buffer, data.byteOffset, data.byteLength))
        else if (data instanceof ArrayBuffer) listener(Buffer.from(data))
      })
      port.start()
    },
    onClose: (listener) => port.on('close', listener),
  }
}

/**
 * Answer the renderer's requests for a VM's screen: from a trusted main frame only, for a VM
 * this app launched with the in-app display. Returns the function that stops answering.
 */
export function serveVmScreens(
  core: IpcCore,
  isTrustedSender: (sender: RequestSender) => boolean,
): () => void {
  const listener = (event: IpcMainEvent, payload: unknown): void => {
    const sender = senderOf(event)
    const request = ScreenRequestSchema.safeParse(payload)
    if (!isTrustedSender(sender) || !request.success) {
      core.log.warn(`refused a screen request from ${sender.url || 'an unknown frame'}`)
      return
    }
    const { jobId, nonce } = request.data
    const reply = (message: { error?: string }, ports: MessagePortMain[] = []): void => {
      if (!event.sender.isDestroyed())
        event.sender.postMessage(SCREEN_PORT_CHANNELS.port, { nonce, ...message }, ports)
    }
    const vm = core.vms.get(jobId)
    if (!vm) return reply({ error: `No VM of this app has the id ${jobId}.` })
    if (vm.vncSocket === null)
      return reply({ error: 'This VM was launched without the in-app display.' })
    connectVncSocket(vm.vncSocket).then(
      (vnc) => {
        const { port1, port2 } = new MessageChannelMain()
        void bridgeVnc(vnc, portViewer(port1), vm)
        reply({}, [port2])
      },
      (error: unknown) => reply({ error: error instanceof Error ? error.message : String(error) }),
    )
  }
  ipcMain.on(SCREEN_PORT_CHANNELS.request, listener)
  return () => ipcMain.off(SCREEN_PORT_CHANNELS.request, listener)
}
