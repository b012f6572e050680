import type { ChannelKey, CHANNELS, EventName } from './channels'
import type { RequestOf, ResponseOf } from './contract'
import type { IpcResult } from './result'

/**
 * What the preload exposes as `window.addcow`: one function per channel, named by its key in
 * `CHANNELS`, and `on` to listen to an event. Nothing else crosses the context bridge.
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
}
