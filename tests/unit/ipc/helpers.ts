import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, beforeAll } from 'vitest'
import type { Channel, EventName } from '../../../shared/ipc/channels'
import type { JobInfo, RequestOf, ResponseOf } from '../../../shared/ipc/contract'
import type { IpcResult } from '../../../shared/ipc/result'
import { Library } from '../../../main/engine/library'
import { createOverlay } from '../../../main/engine/ops/create'
import { createIpcCore, type IpcCore, type IpcCoreOptions } from '../../../main/ipc/index'
import type { Logger } from '../../../main/ipc/logger'
import { trustOrigins, type RequestSender } from '../../../main/ipc/sender'
import { tempDir } from '../../helpers/tools'

/** The origin the test cores trust, as the Electron app trusts its own scheme. */
export const APP_ORIGIN = 'addcow://app'

/** A sender the test cores trust: the app's main frame. */
export const TRUSTED: RequestSender = {
  transport: 'electron',
  url: `${APP_ORIGIN}/index.html#/library`,
  mainFrame: true,
}

/** A logger that keeps what it was told, for assertions. */
export function recordingLogger(): Logger & {
  warnings: string[]
  errors: { message: string; error: unknown }[]
} {
  const warnings: string[] = []
  const errors: { message: string; error: unknown }[] = []
  return {
    warnings,
    errors,
    warn: (message) => warnings.push(message),
    error: (message, error) => errors.push({ message, error }),
  }
}

/** An IPC core over a library in `dataDir`, checking every response against its schema. */
export function testCore(
  dataDir: string,
  options: Partial<IpcCoreOptions> = {},
): IpcCore & {
  logger: ReturnType<typeof recordingLogger>
  events: { event: EventName; payload: unknown }[]
} {
  const logger = recordingLogger()
  const core = createIpcCore({
    host: {
      shell: 'web',
      name: 'AddCow Studio',
      version: '0.0.0-test',
      electronVersion: null,
      chromeVersion: null,
    },
    isTrustedSender: trustOrigins([APP_ORIGIN]),
    library: new Library(join(dataDir, 'library.json')),
    log: logger,
    checkResponses: true,
    progressIntervalMs: 0,
    ...options,
  })
  const events: { event: EventName; payload: unknown }[] = []
  core.bus.subscribe((event, payload) => events.push({ event, payload }))
  return { ...core, logger, events }
}

/** The value of an ok result, or a failed assertion naming the error. */
export function valueOf<T>(result: IpcResult<T>): T {
  if (!result.ok) throw new Error(`expected ok, got ${result.error.code}: ${result.error.message}`)
  return result.value
}

/**
 * Dispatch a request as the app's page and return its value, typed by the channel (the
 * dispatcher checked it against the channel's schema, since test cores check responses).
 */
export async function call<C extends Channel>(
  core: IpcCore,
  channel: C,
  request: RequestOf<C>,
): Promise<ResponseOf<C>> {
  return valueOf(await core.dispatcher.dispatch(channel, request, TRUSTED)) as ResponseOf<C>
}

/** Wait for a job to finish and return its final event (also when it finished already). */
export async function finished(
  core: IpcCore & { events?: { event: EventName; payload: unknown }[] },
  job: JobInfo,
): Promise<
  { event: 'jobs:done'; job: JobInfo; result: unknown } | { event: 'jobs:failed'; job: JobInfo }
> {
  type Outcome =
    { event: 'jobs:done'; job: JobInfo; result: unknown } | { event: 'jobs:failed'; job: JobInfo }
  const match = (event: EventName, payload: unknown): Outcome | null => {
    const data = payload as { job: JobInfo; result?: unknown }
    if ((event !== 'jobs:done' && event !== 'jobs:failed') || data.job.id !== job.id) return null
    return event === 'jobs:done'
      ? { event, job: data.job, result: data.result }
      : { event, job: data.job }
  }
  for (const { event, payload } of core.events ?? []) {
    const outcome = match(event, payload)
    if (outcome) return outcome
  }
  return new Promise((resolve) => {
    const unsubscribe = core.bus.subscribe((event, payload) => {
      const outcome = match(event, payload)
      if (outcome) {
        unsubscribe()
        resolve(outcome)
      }
    })
  })
}

/** A raw file of `size` bytes whose byte at offset i is (i * 7 + seed) & 255 (never all zero). */
export async function patternFile(path: string, size: number, seed = 1): Promise<Buffer> {
  // The bytes repeat every 256: one period, repeated.
  const period = Buffer.from(Array.from({ length: 256 }, (_, index) => (index * 7 + seed) & 255))
  const data = Buffer.alloc(size).fill(period)
  await writeFile(path, data)
  return data
}

/** The temporary folder of the calling test file (set by {@link useIpcFolder}). */
export let dir: string
/** The test core of the calling test file, over a library in `dir`/data. */
export let core: ReturnType<typeof testCore>

/**
 * Give the calling test file a temporary folder `dir` and a test core `core` over a library in
 * it, for all its tests; running jobs are cancelled and the folder removed afterwards.
 */
export function useIpcFolder(prefix: string, options: Partial<IpcCoreOptions> = {}): void {
  let cleanup: () => Promise<void> = async () => undefined
  beforeAll(async () => {
    const temp = await tempDir(prefix)
    cleanup = temp.cleanup
    dir = temp.path
    core = testCore(join(dir, 'data'), options)
  })
  afterAll(async () => {
    await core.jobs.cancelAll()
    await cleanup()
  })
}

/** A job of `core`'s result once it is done; a failed or cancelled job throws with its error. */
export async function runJob(job: JobInfo): Promise<unknown> {
  const outcome = await finished(core, job)
  if (outcome.event === 'jobs:failed')
    throw new Error(`${job.title}: ${outcome.job.error?.code} ${outcome.job.error?.message}`)
  return outcome.result
}

/** `dir`/folder/name: an overlay on `base` (raw), a name relative to its folder. */
export async function overlayOn(folder: string, name: string, base = 'base.raw'): Promise<string> {
  const path = join(dir, folder, name)
  await createOverlay({ overlay: path, backing: base, backingFormat: 'raw' })
  return path
}
