import type { ChannelKey, CHANNELS, EventName } from './channels'
import type { RequestOf, ResponseOf } from './contract'
import type { IpcResult } from './result'

/**
 * What the preload exposes as `window.addcow`: one function per channel, named by its key in
 * `CHANNELS`, `on` to listen to an event, and `openVmScreen` (a MessagePort cannot cross the
 * context bridge, so it comes through window.postMessage). Nothing else crosses the bridge.
 *
 * Every function resolves with an {@link IpcResult}; none rejects for an error main reports.
 */
export type AddcowBridge = {
  readonly [K in ChannelKey]: (
    request: RequestOf<(typeof CHANNELS)[K]>,
  ) => Promise<IpcResult<ResponseOf<(typeof CHANNELS)[K]>>>
} & {
  /** Listen to an event; returns the function that stops listening. */
  readonly on: (event: EventName, listener: (payload: unknown) => void) => () => void
  /**
   * Ask main for a VM's screen (the graphical console): the answer arrives as a window
   * `message` event whose data is `{ addcowScreen: { nonce, error? } }`, with the MessagePort
   * in its `ports` (see SCREEN_PORT_CHANNELS in channels.ts).
   */
  readonly openVmScreen: (jobId: string, nonce: string) => void
}
