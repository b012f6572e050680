import { ref } from 'vue'
import type { Channel, EventName } from '../../../shared/ipc/channels'
import type { IpcResult } from '../../../shared/ipc/result'
import { WireServerMessageSchema, type WireRequest } from '../../../shared/ipc/wire'
import type { ConnectionState, Transport } from './transport'

/** Longest wait between two reconnection attempts. */
const MAX_BACKOFF_MS = 10_000

const LOST: IpcResult<never> = {
  ok: false,
  error: {
    code: 'IO_ERROR',
    message: 'The connection to AddCow Studio was lost; it is being re-established.',
  },
}

/**
 * The browser mode's transport: the same channels and events over one WebSocket to the server
 * that served the page. The access token travels in the page's cookie. Requests made while
 * connecting wait for the connection; a dropped connection fails the requests in flight and
 * reconnects with a growing delay.
 */
export function websocketTransport(url: string): Transport {
  const state = ref<ConnectionState>('connecting')
  const pending = new Map<number, (result: IpcResult<unknown>) => void>()
  const waiting: string[] = []
  const listeners = new Map<EventName, Set<(payload: unknown) => void>>()
  let socket: WebSocket | null = null
  let nextId = 1
  let backoff = 500

  const connect = (): void => {
    state.value = 'connecting'
    const current = new WebSocket(url)
    socket = current
    current.addEventListener('open', () => {
      state.value = 'open'
      backoff = 500
      for (const frame of waiting.splice(0)) current.send(frame)
    })
    current.addEventListener('message', (message: MessageEvent<unknown>) => {
      let data: unknown
      try {
        data = typeof message.data === 'string' ? JSON.parse(message.data) : undefined
      } catch {
        data = undefined
      }
      const parsed = WireServerMessageSchema.safeParse(data)
      if (!parsed.success) return
      const frame = parsed.data
      if (frame.type === 'response') {
        const resolve = pending.get(frame.id)
        pending.delete(frame.id)
        resolve?.(frame.result)
      } else {
        for (const listener of listeners.get(frame.event as EventName) ?? [])
          listener(frame.payload)
      }
    })
    current.addEventListener('close', () => {
      if (socket !== current) return
      socket = null
      state.value = 'closed'
      for (const resolve of pending.values()) resolve(LOST)
      pending.clear()
      setTimeout(connect, backoff)
      backoff = Math.min(MAX_BACKOFF_MS, backoff * 2)
    })
  }
  connect()

  return {
    kind: 'web',
    state,
    invoke(channel: Channel, payload: unknown) {
      const id = nextId++
      const frame = JSON.stringify({ type: 'request', id, channel, payload } satisfies WireRequest)
      return new Promise<IpcResult<unknown>>((resolve) => {
        pending.set(id, resolve)
        if (socket && socket.readyState === WebSocket.OPEN) socket.send(frame)
        else waiting.push(frame)
      })
    },
    on(event, listener) {
      const set = listeners.get(event) ?? new Set()
      listeners.set(event, set)
      set.add(listener)
      return () => {
        set.delete(listener)
      }
    },
  }
}
