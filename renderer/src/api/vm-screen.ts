import type { RfbChannel } from '@novnc/novnc'

/**
 * Where noVNC reaches a launched VM's screen: in the browser mode the server's `/vnc`
 * endpoint (same origin, so the page's token cookie and Origin authenticate it, as for `/ws`);
 * in Electron a MessagePort from main, once the preload offers one (null until then).
 */
export function vmScreenTarget(sessionId: string): string | RfbChannel | null {
  if (window.addcow) return null
  const scheme = window.location.protocol === 'https:' ? 'wss' : 'ws'
  return `${scheme}://${window.location.host}/vnc?vm=${encodeURIComponent(sessionId)}`
}
