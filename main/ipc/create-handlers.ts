import { homedir } from 'node:os'
import { basename, dirname } from 'node:path'
import { CHANNELS } from '../../shared/ipc/channels'
import type { ParsedRequestOf } from '../../shared/ipc/contract'
import { EngineError } from '../engine/errors'
import type { Library } from '../engine/library'
import { compareDisks } from '../engine/ops/compare'
import { realPath } from '../engine/fs'
import { createOverlay } from '../engine/ops/create'
import { imageInfo } from '../engine/ops/info'
import { openImage } from '../engine/open'
import type { EventBus } from './events'
import { listFolder, listRoots } from './file-system'
import type { Handlers } from './handlers'
import { allocationBuckets, mapRange } from './image-queries'
import type { JobManager } from './jobs'
import { assertOpensAsImage, summarizeLibrary } from './library-summary'
import type { Logger } from './logger'
import { createOperationHandlers } from './operation-handlers'
import { createSessionHandlers } from './session-handlers'
import type { RequestSender } from './sender'

/** What the shell running the handlers says about itself (for `app:get-info`). */
export interface HostInfo {
  shell: 'electron' | 'web'
  name: string
  version: string
  electronVersion: string | null
  chromeVersion: string | null
}

/** Native open and save dialogs; only the Electron shell has them. */
export interface NativeDialogs {
  openFiles(request: ParsedRequestOf<'dialog:open-files'>, sender: RequestSender): Promise<string[]>
  saveFile(
    request: ParsedRequestOf<'dialog:save-file'>,
    sender: RequestSender,
  ): Promise<string | null>
}

/** The services the handlers use. */
export interface IpcServices {
  library: Library
  jobs: JobManager
  bus: EventBus
  log: Logger
  host: HostInfo
  /** null in the browser mode: the renderer uses its in-app file browser instead. */
  dialogs: NativeDialogs | null
  /** Time a stopping VM gets to power down before QEMU is told to quit (default 15 s). */
  vmStopTimeoutMs?: number
}

function noDialogs(): never {
  throw new EngineError(
    'NOT_CAPABLE',
    'Native dialogs exist only in the desktop app; the browser mode uses the in-app file browser.',
  )
}

/**
 * The handler table over the real engine. Images are opened with the library's name policy
 * (trusted pairs), so a name stored in an image is followed only if it stays in its folder or
 * the user trusted it; `library:approve-name` records such a trust.
 */
export function createHandlers(services: IpcServices): Handlers {
  const { library, jobs, bus, log, host } = services
  const policy = () => library.policy()

  return {
    ...createOperationHandlers(services),
    ...createSessionHandlers(services),

    [CHANNELS.libraryListImages]: () => summarizeLibrary(library, log),

    [CHANNELS.libraryAddImages]: async ({ paths }) => {
      const currentPolicy = await policy()
      for (const path of paths) await assertOpensAsImage(path, currentPolicy)
      await library.addImages(paths)
      bus.emit('library:changed', { reason: 'added', paths })
      return { added: paths }
    },

    [CHANNELS.libraryRemoveImages]: async ({ paths }) => {
      const known = new Set((await library.load()).images.map((image) => image.path))
      const removed = paths.filter((path) => known.has(path))
      await library.removeImages(paths)
      if (removed.length > 0) bus.emit('library:changed', { reason: 'removed', paths: removed })
      return { removed }
    },

    [CHANNELS.libraryListRecent]: async () => ({ paths: (await library.load()).recent }),

    [CHANNELS.libraryApproveName]: async ({ image, stored }) => {
      const layers = await imageInfo(image, { backingChain: true, policy: await policy() })
      for (const layer of layers) {
        const verdict = layer.names?.find((name) => name.stored === stored)
        if (!verdict) continue
        const from = await realPath(layer.filename)
        const to = await realPath(verdict.resolved)
        if (verdict.followed) return { from, to, alreadyFollowed: true }
        if (verdict.reason !== 'outside-folder') {
          throw new EngineError(
            'REFUSED_NAME',
            `The name '${stored}' in ${layer.filename} cannot be approved: it is refused as ${verdict.reason}, whatever the library trusts.`,
            { path: layer.filename, field: 'stored', value: stored },
          )
        }
        await library.trust([{ from, to }], 'approved')
        bus.emit('library:changed', { reason: 'approved', paths: [image] })
        return { from, to, alreadyFollowed: false }
      }
      throw new EngineError(
        'NOT_FOUND',
        `No layer of the chain of ${image} stores the name '${stored}'.`,
        {
          path: image,
          field: 'stored',
          value: stored,
        },
      )
    },

    [CHANNELS.imageGetInfo]: async ({ path, backingChain }) => ({
      layers: await imageInfo(path, { backingChain, policy: await policy() }),
    }),

    [CHANNELS.imageGetMap]: async ({ path, offset, length, limit }) => {
      const disk = await openImage(path, { readOnly: true, policy: await policy() })
      try {
        return await mapRange(disk, offset, length, limit)
      } finally {
        await disk.close()
      }
    },

    [CHANNELS.imageGetAllocation]: async ({ path, buckets, offset, length }) => {
      const disk = await openImage(path, { readOnly: true, policy: await policy() })
      try {
        return await allocationBuckets(disk, buckets, offset, length)
      } finally {
        await disk.close()
      }
    },

    [CHANNELS.imageCreateOverlay]: {
      unit: 'steps',
      title: ({ overlay }) => `Create overlay ${basename(overlay)}`,
      async run(request, job) {
        const result = await createOverlay({
          ...request,
          policy: await policy(),
          signal: job.signal,
          onProgress: job.progress,
        })
        await library.trust(result.trust, 'created')
        if (result.baseFingerprint) await library.recordBaseFingerprint(result.baseFingerprint)
        await library.addImages([result.overlay])
        bus.emit('library:changed', { reason: 'created', paths: [result.overlay] })
        return {
          overlay: result.overlay,
          image: result.image,
          imageCreated: result.imageCreated,
          backing: result.backing,
          backingFormat: result.backingFormat,
          size: result.size,
          clusterSize: result.clusterSize,
        }
      },
    },

    [CHANNELS.imageCompareImages]: {
      unit: 'bytes',
      title: ({ a, b }) => `Compare ${basename(a)} with ${basename(b)}`,
      async run({ a, b }, job) {
        const currentPolicy = await policy()
        const first = await openImage(a, { readOnly: true, policy: currentPolicy })
        try {
          const second = await openImage(b, { readOnly: true, policy: currentPolicy })
          try {
            return await compareDisks(first, second, {
              signal: job.signal,
              onProgress: job.progress,
            })
          } finally {
            await second.close()
          }
        } finally {
          await first.close()
        }
      },
    },

    [CHANNELS.fsListFolder]: ({ path, showHidden }) => listFolder(path, showHidden),

    [CHANNELS.fsListRoots]: () => listRoots(),

    [CHANNELS.dialogOpenFiles]: async (request, { sender }) => {
      if (!services.dialogs) noDialogs()
      return { paths: await services.dialogs.openFiles(request, sender) }
    },

    [CHANNELS.dialogSaveFile]: async (request, { sender }) => {
      if (!services.dialogs) noDialogs()
      return { path: await services.dialogs.saveFile(request, sender) }
    },

    [CHANNELS.jobsListJobs]: async () => ({ jobs: jobs.list() }),

    [CHANNELS.jobsCancelJob]: async ({ jobId }) => jobs.cancel(jobId),

    [CHANNELS.jobsClearFinished]: async () => ({ removed: jobs.clearFinished() }),

    [CHANNELS.appGetInfo]: async () => ({
      name: host.name,
      version: host.version,
      shell: host.shell,
      platform: process.platform,
      arch: process.arch,
      dataDir: dirname(library.file),
      libraryFile: library.file,
      home: homedir(),
      nativeDialogs: services.dialogs !== null,
      versions: {
        node: process.versions.node,
        electron: host.electronVersion,
        chrome: host.chromeVersion,
      },
    }),
  }
}
