import type {
  CallChannel,
  JobChannel,
  JobResultOf,
  ParsedRequestOf,
  ResponseOf,
} from '../../shared/ipc/contract'
import type { Channel } from '../../shared/ipc/channels'
import type { JobRun } from './jobs'
import type { RequestSender } from './sender'

/** What a call handler gets besides its request. */
export interface CallContext {
  sender: RequestSender
}

/** Answers one request/response channel. Throws EngineError for user errors. */
export type CallHandler<C extends CallChannel> = (
  request: ParsedRequestOf<C>,
  context: CallContext,
) => Promise<ResponseOf<C>>

/** Runs one job channel's work under the job manager. */
export interface JobHandler<C extends JobChannel> {
  /** Whether progress counts bytes or steps. */
  unit: 'bytes' | 'steps'
  /** The job's title in the jobs list. */
  title(request: ParsedRequestOf<C>): string
  /** Do the work; honour `job.signal` and report `job.progress`. */
  run(request: ParsedRequestOf<C>, job: JobRun, context: CallContext): Promise<JobResultOf<C>>
}

/**
 * The handler table: one entry per channel of the contract, and the compiler refuses a table
 * with a channel missing or an entry whose types do not match the channel's schemas. It is
 * transport-neutral: Electron's ipcMain and the browser mode's WebSocket both dispatch to it.
 */
export type Handlers = { readonly [C in CallChannel]: CallHandler<C> } & {
  readonly [C in JobChannel]: JobHandler<C>
}

/** The areas of the channels: the part of `area:verb-noun` before the colon. */
export type ChannelArea = Channel extends `${infer Area}:${string}` ? Area : never

/**
 * The handlers of one area: exactly its channels (`handlers/<area>.ts` returns this), so a
 * channel cannot live in another area's file, and the areas together make {@link Handlers}.
 */
export type AreaHandlers<Area extends ChannelArea> = Pick<
  Handlers,
  Extract<Channel, `${Area}:${string}`>
>
