import type { Ref } from 'vue'
import type { Channel, EventName } from '../../../shared/ipc/channels'
import type { IpcResult } from '../../../shared/ipc/result'

/** State of the link to main: the Electron bridge is always open; a WebSocket may drop. */
export type ConnectionState = 'connecting' | 'open' | 'closed'

/**
 * How the renderer reaches main: the preload bridge in Electron, a WebSocket in the browser
 * mode. Both carry the same channels and events and never throw for an error main reports.
 */
export interface Transport {
  readonly kind: 'electron' | 'web'
  readonly state: Readonly<Ref<ConnectionState>>
  invoke(channel: Channel, payload: unknown): Promise<IpcResult<unknown>>
  on(event: EventName, listener: (payload: unknown) => void): () => void
}
