// The part of noVNC's RFB class (@novnc/novnc 1.7, core/rfb.js; docs/API.md) the graphical
// console uses. noVNC ships no type declarations.
declare module '@novnc/novnc' {
  /** What RFB accepts instead of a URL: an open WebSocket-like channel (see core/websock.js). */
  export interface RfbChannel {
    binaryType: string
    readonly protocol: string
    readonly readyState: string | number
    send(data: ArrayBuffer | Uint8Array): void
    close(): void
    onopen: ((event: Event) => void) | null
    onclose: ((event: CloseEvent) => void) | null
    onerror: ((event: Event) => void) | null
    onmessage: ((event: MessageEvent<ArrayBuffer>) => void) | null
  }

  /** A VNC session drawn into a canvas that RFB adds to `target`. */
  export default class RFB extends EventTarget {
    constructor(
      target: HTMLElement,
      urlOrChannel: string | WebSocket | RfbChannel,
      options?: { shared?: boolean; wsProtocols?: string[]; credentials?: Record<string, string> },
    )
    /** Scale the remote screen down (or up) to fit the target element. */
    scaleViewport: boolean
    /** Ask the server to resize its screen to the target (QEMU's VGA ignores it). */
    resizeSession: boolean
    /** Take the keyboard focus when the canvas is clicked. */
    focusOnClick: boolean
    viewOnly: boolean
    background: string
    disconnect(): void
    sendCtrlAltDel(): void
    sendKey(keysym: number, code: string | null, down?: boolean): void
    focus(options?: FocusOptions): void
    blur(): void
  }
}
