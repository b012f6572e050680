import { isChannel, type Channel } from '../../shared/ipc/channels'
import { CONTRACT, responseSchemaOf, type ChannelSpec } from '../../shared/ipc/contract'
import { fail, ok, type IpcResult } from '../../shared/ipc/result'
import { badRequest, toIpcError } from './errors'
import type { CallContext, Handlers } from './handler-table'
import type { JobManager, JobRun } from './jobs'
import type { Logger } from './logger'
import type { RequestSender } from './sender'

/** A call handler with its channel's types erased (the contract was checked at compile time). */
type ErasedCallHandler = (request: unknown, context: CallContext) => Promise<unknown>

/** A job handler with its channel's types erased. */
interface ErasedJobHandler {
  unit: 'bytes' | 'steps'
  title(request: unknown): string
  run(request: unknown, job: JobRun, context: CallContext): Promise<unknown>
}

/** What the dispatcher needs. */
export interface DispatcherOptions {
  handlers: Handlers
  jobs: JobManager
  log: Logger
  /** Whether a sender may use the IPC at all (frame URL or WebSocket Origin). */
  isTrustedSender: (sender: RequestSender) => boolean
  /** Validate every response against its schema too (tests; a mismatch is INTERNAL). */
  checkResponses?: boolean
}

/**
 * The one entry point of every request, whatever the transport: checks the sender (FORBIDDEN),
 * the channel and the payload against its schema (BAD_REQUEST), then runs the handler or
 * starts the job. It never throws: every outcome is an {@link IpcResult}.
 */
export class IpcDispatcher {
  constructor(private readonly options: DispatcherOptions) {}

  /** Handle one request. */
  async dispatch(
    channel: string,
    payload: unknown,
    sender: RequestSender,
  ): Promise<IpcResult<unknown>> {
    const { log } = this.options
    const name = typeof channel === 'string' ? channel.slice(0, 100) : String(channel)
    if (!this.options.isTrustedSender(sender)) {
      log.warn(`refused ${name} from an untrusted sender (${sender.transport} ${sender.url})`)
      return fail(
        'FORBIDDEN',
        `Refused ${name}: the request did not come from the app's own page.`,
        {
          value: sender.url.slice(0, 200),
        },
      )
    }
    if (!isChannel(channel)) {
      return fail('BAD_REQUEST', `There is no channel '${name}'.`, {
        field: 'channel',
        value: name,
      })
    }
    const spec: ChannelSpec = CONTRACT[channel]
    const parsed = spec.request.safeParse(payload === undefined ? {} : payload)
    if (!parsed.success) return { ok: false, error: badRequest(channel, parsed.error) }
    const context: CallContext = { sender }
    try {
      const value =
        spec.kind === 'job'
          ? { job: this.startJob(channel, parsed.data, context) }
          : await (
              this.options.handlers[channel as keyof Handlers] as unknown as ErasedCallHandler
            )(parsed.data, context)
      if (this.options.checkResponses) {
        const checked = responseSchemaOf(channel).safeParse(value)
        if (!checked.success) {
          log.error(`the response of ${channel} does not match its schema`, checked.error)
          return fail(
            'INTERNAL',
            `Internal error in ${channel}: the response does not match its schema.`,
          )
        }
      }
      return ok(value)
    } catch (error) {
      return { ok: false, error: toIpcError(error, log, channel) }
    }
  }

  private startJob(
    channel: Channel,
    request: unknown,
    context: CallContext,
  ): ReturnType<JobManager['start']> {
    const handler = this.options.handlers[channel as keyof Handlers] as unknown as ErasedJobHandler
    return this.options.jobs.start(
      channel,
      handler.title(request),
      handler.unit,
      (job) => handler.run(request, job, context),
      { image: imageOfRequest(request), vmJobId: vmJobOfRequest(request) },
    )
  }
}

/** The VM job a job's request works on (a live operation's `jobId`). */
function vmJobOfRequest(request: unknown): string | undefined {
  if (typeof request !== 'object' || request === null) return undefined
  const { jobId } = request as { jobId?: unknown }
  return typeof jobId === 'string' ? jobId : undefined
}

/** The image a job's request acts on: its `path`, `overlay` or (compare) `a`. */
function imageOfRequest(request: unknown): string | undefined {
  if (typeof request !== 'object' || request === null) return undefined
  const fields = request as { path?: unknown; overlay?: unknown; a?: unknown }
  const image = [fields.path, fields.overlay, fields.a].find((value) => typeof value === 'string')
  return typeof image === 'string' ? image : undefined
}
