import type { AddcowBridge } from '../../shared/ipc/bridge'

declare global {
  interface Window {
    /** Set by the Electron preload; absent in the browser mode. */
    readonly addcow?: AddcowBridge
  }
}

export {}
