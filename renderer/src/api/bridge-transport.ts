import { ref } from 'vue'
import type { AddcowBridge } from '../../../shared/ipc/bridge'
import { CHANNELS, type Channel, type ChannelKey } from '../../../shared/ipc/channels'
import type { IpcResult } from '../../../shared/ipc/result'
import type { Transport } from './transport'

const KEY_OF = new Map<Channel, ChannelKey>(
  (Object.keys(CHANNELS) as ChannelKey[]).map((key) => [CHANNELS[key], key]),
)

/** The Electron transport: the preload's `window.addcow`, one function per channel. */
export function bridgeTransport(bridge: AddcowBridge): Transport {
  return {
    kind: 'electron',
    state: ref('open'),
    async invoke(channel, payload) {
      const key = KEY_OF.get(channel)
      if (key === undefined) {
        return {
          ok: false,
          error: { code: 'BAD_REQUEST', message: `There is no channel '${channel}'.` },
        }
      }
      const call = bridge[key] as (request: unknown) => Promise<IpcResult<unknown>>
      return call(payload)
    },
    on: (event, listener) => bridge.on(event, listener),
  }
}
