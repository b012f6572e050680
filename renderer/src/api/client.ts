import type { Channel, EventName } from '../../../shared/ipc/channels'
import {
  CONTRACT,
  EVENT_CONTRACT,
  JobStartedSchema,
  type CallChannel,
  type CallSpec,
  type EventPayload,
  type JobChannel,
  type JobResultOf,
  type JobSpec,
  type JobStarted,
  type RequestOf,
  type ResponseOf,
} from '../../../shared/ipc/contract'
import type { IpcError } from '../../../shared/ipc/result'
import type { Transport } from './transport'

/** An error main reported, with its stable code; thrown by the client to its callers. */
export class IpcRequestError extends Error {
  readonly code: IpcError['code']

  constructor(
    readonly error: IpcError,
    readonly channel: Channel,
  ) {
    super(error.message)
    this.name = 'IpcRequestError'
    this.code = error.code
  }
}

/**
 * The typed client every store uses: requests and events are typed by the contract, and every
 * response is checked against its schema before the app sees it.
 */
export interface IpcClient {
  readonly transport: Transport
  /** Call a channel; throws {@link IpcRequestError} when main reports an error. */
  call<C extends CallChannel>(channel: C, request: RequestOf<C>): Promise<ResponseOf<C>>
  /** Start a job; resolves with the job as soon as it runs. */
  startJob<C extends JobChannel>(channel: C, request: RequestOf<C>): Promise<JobStarted>
  /** Check a finished job's result against its channel's schema. */
  parseJobResult<C extends JobChannel>(channel: C, result: unknown): JobResultOf<C>
  /** Listen to an event (payloads that do not match their schema are dropped). */
  on<E extends EventName>(event: E, listener: (payload: EventPayload<E>) => void): () => void
}

/** Build the typed client over a transport. */
export function createClient(transport: Transport): IpcClient {
  const invoke = async (channel: Channel, request: unknown): Promise<unknown> => {
    const result = await transport.invoke(channel, request)
    if (!result.ok) throw new IpcRequestError(result.error, channel)
    return result.value
  }
  return {
    transport,
    async call(channel, request) {
      const spec: CallSpec = CONTRACT[channel]
      return spec.response.parse(await invoke(channel, request)) as ResponseOf<typeof channel>
    },
    async startJob(channel, request) {
      return JobStartedSchema.parse(await invoke(channel, request))
    },
    parseJobResult(channel, result) {
      const spec: JobSpec = CONTRACT[channel]
      return spec.result.parse(result) as JobResultOf<typeof channel>
    },
    on(event, listener) {
      const schema = EVENT_CONTRACT[event]
      return transport.on(event, (payload) => {
        const parsed = schema.safeParse(payload)
        if (parsed.success) listener(parsed.data as EventPayload<typeof event>)
        else console.warn(`AddCow Studio: dropped a malformed ${event} event`, parsed.error)
      })
    },
  }
}
