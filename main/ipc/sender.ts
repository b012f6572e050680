/**
 * Who sent a request: the transport, the URL of the frame or page that sent it, and whether it
 * came from a main frame. Transports fill it in; the dispatcher decides whether to trust it.
 */
export interface RequestSender {
  transport: 'electron' | 'web' | 'internal'
  /** The sending frame's URL (Electron) or the WebSocket's Origin (browser mode). */
  url: string
  /** False for a sub-frame (an iframe); only main frames are trusted. */
  mainFrame: boolean
  /** Electron: the sending webContents' id, so a dialog can be parented to its window. */
  contentsId?: number
}

/**
 * `scheme://host[:port]` of a URL, or '' when it does not parse. Unlike `URL.origin` this also
 * works for custom schemes (Node reports `null` as their origin).
 */
export function originOf(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.host === '') return ''
    return `${parsed.protocol}//${parsed.host}`
  } catch {
    return ''
  }
}

/** A sender check that trusts main frames whose origin is one of `origins`. */
export function trustOrigins(origins: Iterable<string>): (sender: RequestSender) => boolean {
  const trusted = new Set(origins)
  return (sender) => sender.mainFrame && trusted.has(originOf(sender.url))
}
