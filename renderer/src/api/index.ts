import { bridgeTransport } from './bridge-transport'
import { createClient, type IpcClient } from './client'
import { websocketTransport } from './websocket-transport'

export { IpcRequestError, type IpcClient } from './client'
export type { ConnectionState } from './transport'

let client: IpcClient | null = null

/**
 * The app's client: over the preload bridge in Electron (window.addcow exists), else over a
 * WebSocket to the server that served the page (the browser mode).
 */
export function useClient(): IpcClient {
  if (client) return client
  if (window.addcow) {
    client = createClient(bridgeTransport(window.addcow))
  } else {
    const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws'
    client = createClient(websocketTransport(`${scheme}://${window.location.host}/ws`))
  }
  return client
}

/** The sentence to show for anything a request threw. */
export function errorMessage(error: unknown): string {
  return error instanceof Error ? error.message : String(error)
}
