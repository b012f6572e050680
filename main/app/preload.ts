import { contextBridge, ipcRenderer, type IpcRendererEvent } from 'electron'
import { CHANNELS, isEventName } from '../../shared/ipc/channels'

// The sandboxed preload: it may require only 'electron', so it is bundled into one CommonJS
// file with the import-free channel list. It exposes `window.addcow` (typed as AddcowBridge in
// shared/ipc/bridge.ts): one function per channel, named by its key in CHANNELS, and `on` for
// events. Nothing else crosses the bridge: not ipcRenderer, not a generic invoke, not Node.

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

contextBridge.exposeInMainWorld('addcow', Object.freeze({ ...functions, on }))
