import type { RfbChannel } from '@novnc/novnc'
import type { AddcowBridge } from '../../../shared/ipc/bridge'

/**
 * Where noVNC reaches a launched VM's screen: in the browser mode the server's `/vnc`
 * endpoint (same origin, so the page's token cookie and Origin authenticate it, as for `/ws`);
 * in Electron a MessagePort from main (no socket anyone else could reach), wrapped as the
 * WebSocket-like channel noVNC accepts.
 */
export function vmScreenTarget(sessionId: string): string | RfbChannel {
  const bridge = window.addcow
  if (bridge) return portChannel(bridge, sessionId)
  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws'
  return `${scheme}://${window.location.host}/vnc?vm=${encodeURIComponent(sessionId)}`
}

/** What main answers a screen request with (main/app/vm-screens.ts). */
interface ScreenAnswer {
  nonce?: unknown
  error?: unknown
}

/** A random id that pairs main's answer with this request. */
function newNonce(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(18))
  return btoa(String.fromCharCode(...bytes))
    .replace(/\+/g, '-')
    .replace(/\//g, '_')
}

/**
 * A noVNC raw channel over the MessagePort main sends for a VM's screen: 'connecting' until
 * the port arrives, then bytes both ways; main's `{ closed }` message or close() ends it.
 */
function portChannel(bridge: AddcowBridge, sessionId: string): RfbChannel {
  const nonce = newNonce()
  let port: MessagePort | null = null
  const channel = {
    binaryType: 'arraybuffer',
    protocol: '',
    readyState: 'connecting' as 'connecting' | 'open' | 'closed',
    onopen: null as ((event: Event) => void) | null,
    onclose: null as ((event: CloseEvent) => void) | null,
    onerror: null as ((event: Event) => void) | null,
    onmessage: null as ((event: MessageEvent<ArrayBuffer>) => void) | null,
    send(data: ArrayBuffer | Uint8Array): void {
      // Posting copies: noVNC reuses its send buffer.
      port?.postMessage(data)
    },
    close(): void {
      port?.postMessage({ close: true })
      port?.close()
      finish('', true)
    },
  }
  const finish = (reason: string, clean: boolean): void => {
    window.removeEventListener('message', onAnswer)
    if (channel.readyState === 'closed') return
    channel.readyState = 'closed'
    if (!clean) channel.onerror?.(new Event('error'))
    channel.onclose?.(
      new CloseEvent('close', { code: clean ? 1000 : 1006, reason, wasClean: clean }),
    )
  }
  const onAnswer = (event: MessageEvent<unknown>): void => {
    if (event.source !== window) return
    const answer = (event.data as { addcowScreen?: ScreenAnswer } | null)?.addcowScreen
    if (!answer || answer.nonce !== nonce) return
    window.removeEventListener('message', onAnswer)
    const received = event.ports[0]
    if (typeof answer.error === 'string' || !received) {
      finish(typeof answer.error === 'string' ? answer.error : 'No screen port came.', false)
      return
    }
    port = received
    port.onmessage = ({ data }: MessageEvent<unknown>) => {
      // isView, not instanceof: the bytes may come from another realm's Uint8Array.
      if (ArrayBuffer.isView(data)) {
        const bytes = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)
        channel.onmessage?.(new MessageEvent('message', { data: bytes as ArrayBuffer }))
      } else if (typeof (data as { closed?: unknown } | null)?.closed === 'string') {
        port?.close()
        finish((data as { closed: string }).closed, true)
      }
    }
    port.start()
    channel.readyState = 'open'
    channel.onopen?.(new Event('open'))
  }
  window.addEventListener('message', onAnswer)
  bridge.openVmScreen(sessionId, nonce)
  return channel
}
