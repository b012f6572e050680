import { contextBridge, ipcRenderer, type IpcRendererEvent } from 'electron'
import { CHANNELS, isEventName, SCREEN_PORT_CHANNELS } from '../../shared/ipc/channels'

// The sandboxed preload: it may require only 'electron', so it is bundled into one CommonJS
// file with the import-free channel list. It exposes `window.addcow` (typed as AddcowBridge in
// shared/ipc/bridge.ts): one function per channel, named by its key in CHANNELS, and `on` for
// events, and openVmScreen for the graphical console's MessagePort. Nothing else crosses the
// bridge: not ipcRenderer, not a generic invoke, not Node.

const functions = Object.fromEntries(
  Object.entries(CHANNELS).map(([key, channel]) => [
    key,
    (request: unknown) => ipcRenderer.invoke(channel, request),
  ]),
)

function on(event: unknown, listener: unknown): () => void {
  if (!isEventName(event) || typeof listener !== 'function') {
    throw new TypeError(
      `addcow.on: '${String(event)}' is not an event, or the listener is not a function.`,
    )
  }
  const forward = (_event: IpcRendererEvent, payload: unknown): void => {
    Reflect.apply(listener, undefined, [payload])
  }
  ipcRenderer.on(event, forward)
  return () => {
    ipcRenderer.removeListener(event, forward)
  }
}

/** Ask main for a VM's screen; the port comes back through forwardScreenPort. */
function openVmScreen(jobId: unknown, nonce: unknown): void {
  ipcRenderer.send(SCREEN_PORT_CHANNELS.request, { jobId, nonce })
}

// A MessagePort cannot cross the context bridge: window.postMessage hands it to the page
// (Electron's documented way for context-isolated pages). Only main sends on this channel.
ipcRenderer.on(SCREEN_PORT_CHANNELS.port, (event: IpcRendererEvent, message: unknown) => {
  window.postMessage({ addcowScreen: message }, '*', event.ports)
})

contextBridge.exposeInMainWorld('addcow', Object.freeze({ ...functions, on, openVmScreen }))
