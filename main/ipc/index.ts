import { Library } from '../engine/library'
import type { VmHandle } from '../qemu/launcher'
import { IpcDispatcher } from './dispatcher'
import { EventBus } from './events'
import type { Handlers } from './handler-table'
import { createHandlers } from './handlers/index'
import { ImageReaders } from './image-readers'
import { LibrarySummaries } from './library-summary'
import { JobManager, type JobClock } from './jobs'
import { consoleLogger, type Logger } from './logger'
import type { RequestSender } from './sender'
import type { HostInfo, NativeDialogs } from './services'

export { IpcDispatcher } from './dispatcher'
export { EventBus } from './events'
export { JobManager } from './jobs'
export { createHandlers } from './handlers/index'
export type { HostInfo, NativeDialogs, IpcServices } from './services'
export type { AreaHandlers, ChannelArea, Handlers } from './handler-table'
export type { Logger } from './logger'
export { originOf, trustOrigins, type RequestSender } from './sender'

/** Everything a transport needs: the dispatcher, the event bus, and the services behind them. */
export interface IpcCore {
  dispatcher: IpcDispatcher
  bus: EventBus
  jobs: JobManager
  library: Library
  /** The images the map channels keep open; closeAll() when the shell shuts down. */
  images: ImageReaders
  handlers: Handlers
  log: Logger
  /** The running VMs this app launched, by launch job id (for the graphical console's bridge). */
  vms: ReadonlyMap<string, VmHandle>
}

/** How to assemble the IPC core. */
export interface IpcCoreOptions {
  host: HostInfo
  isTrustedSender: (sender: RequestSender) => boolean
  library?: Library
  dialogs?: NativeDialogs | null
  log?: Logger
  clock?: JobClock
  progressIntervalMs?: number
  checkResponses?: boolean
  vmStopTimeoutMs?: number
}

/**
 * The composition root of the IPC: assemble the transport-neutral core (library, events, jobs,
 * the handler table of `handlers/`, and the dispatcher in front of it).
 */
export function createIpcCore(options: IpcCoreOptions): IpcCore {
  const log = options.log ?? consoleLogger
  const library = options.library ?? new Library()
  const bus = new EventBus(log)
  const jobs = new JobManager({
    bus,
    log,
    ...(options.clock ? { clock: options.clock } : {}),
    ...(options.progressIntervalMs !== undefined
      ? { progressIntervalMs: options.progressIntervalMs }
      : {}),
  })
  const images = new ImageReaders(library)
  const vms = new Map<string, VmHandle>()
  const handlers = createHandlers({
    vms,
    library,
    images,
    summaries: new LibrarySummaries(),
    jobs,
    bus,
    log,
    host: options.host,
    dialogs: options.dialogs ?? null,
    ...(options.vmStopTimeoutMs !== undefined ? { vmStopTimeoutMs: options.vmStopTimeoutMs } : {}),
  })
  const dispatcher = new IpcDispatcher({
    handlers,
    jobs,
    log,
    isTrustedSender: options.isTrustedSender,
    checkResponses: options.checkResponses ?? false,
  })
  return { dispatcher, bus, jobs, library, images, handlers, log, vms }
}
