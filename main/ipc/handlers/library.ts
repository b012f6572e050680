import { EngineError, quote } from '../../engine/errors'
import { openImage } from '../../engine/open'
import { deleteImageFiles } from '../../engine/ops/delete'
import { recordBaseFingerprint } from '../../engine/ops/drift'
import { imageInfo } from '../../engine/ops/info'
import { locateBase } from '../../engine/ops/locate'
import type { IpcError } from '../../../shared/ipc/result'
import { toIpcError } from '../errors'
import type { AreaHandlers } from '../handler-table'
import { realPath } from '../../engine/fs'
import { ListingVersions } from '../library-listing'
import { assertOpensAsImage } from '../library-summary'
import type { IpcServices } from '../services'

/** How long a list waits for images read for the first time before it answers with them pending. */
const LIST_WAIT_MS = 300

/**
 * `library:*`: the persisted library the app shares with the CLI (known images, recent files,
 * trusted name pairs). Adding checks that each file opens as an image; approving a name records
 * the pair as trusted, so the name is followed from then on.
 */
export function libraryHandlers(services: IpcServices): AreaHandlers<'library'> {
  const { library, bus, log, summaries } = services
  const listings = new ListingVersions()

  return {
    // A large library read for the first time answers within LIST_WAIT_MS, its unread images
    // pending; the event that follows makes the views list it again, then from what is kept.
    // A Refresh names the listing it holds and gets only the rows that changed since.
    'library:list-images': async ({ since }) => {
      const { images, warning } = await summaries.list(library, log, {
        waitMs: LIST_WAIT_MS,
        onSettled: (paths) => bus.emit('library:changed', { reason: 'summarized', paths }),
      })
      return listings.answer(images, warning, since)
    },

    // One unreadable file does not keep the others out: they are added, it is reported.
    'library:add-images': async ({ paths }) => {
      const policy = await library.policy()
      const added: string[] = []
      const failed: { path: string; error: IpcError }[] = []
      let firstError: unknown = null
      for (const path of paths) {
        try {
          await assertOpensAsImage(path, policy)
          added.push(path)
        } catch (error) {
          firstError ??= error
          failed.push({ path, error: toIpcError(error, log, 'library:add-images') })
        }
      }
      if (added.length === 0) throw firstError
      await library.addImages(added)
      bus.emit('library:changed', { reason: 'added', paths: added })
      return { added, failed }
    },

    'library:remove-images': async ({ paths }) => {
      const known = new Set((await library.load()).images.map((image) => image.path))
      const removed = paths.filter((path) => known.has(path))
      await library.removeImages(paths)
      if (removed.length > 0) bus.emit('library:changed', { reason: 'removed', paths: removed })
      return { removed }
    },

    'library:list-recent': async () => ({ paths: (await library.load()).recent }),

    'library:approve-name': async ({ image, stored }) => {
      const layers = await imageInfo(image, { backingChain: true, policy: await library.policy() })
      for (const layer of layers) {
        const verdict = layer.names?.find((name) => name.stored === stored)
        if (!verdict) continue
        const from = await realPath(layer.filename)
        const to = await realPath(verdict.resolved)
        if (verdict.followed) return { from, to, alreadyFollowed: true }
        if (verdict.reason !== 'outside-folder') {
          throw new EngineError(
            'REFUSED_NAME',
            `The name ${quote(stored)} in ${layer.filename} cannot be approved: it is refused as ${verdict.reason}, whatever the library trusts.`,
            { path: layer.filename, field: 'stored', value: stored },
          )
        }
        await library.trust([{ from, to }], 'approved')
        bus.emit('library:changed', { reason: 'approved', paths: [image] })
        return { from, to, alreadyFollowed: false }
      }
      throw new EngineError(
        'NOT_FOUND',
        `No layer of the chain of ${image} stores the name ${quote(stored)}.`,
        { path: image, field: 'stored', value: stored },
      )
    },

    'library:record-fingerprint': async ({ path }) => {
      const disk = await openImage(path, { readOnly: true, policy: await library.policy() })
      let recorded
      try {
        recorded = await recordBaseFingerprint(disk, library)
      } finally {
        await disk.close()
      }
      if (!recorded) {
        throw new EngineError('BAD_ARGUMENT', `${path} has no base to fingerprint.`, { path })
      }
      bus.emit('library:changed', { reason: 'modified', paths: [path] })
      return { overlay: recorded.overlay, base: recorded.base, recordedAt: recorded.recordedAt }
    },

    'library:delete-files': async ({ path, dryRun }) => {
      const result = await deleteImageFiles({
        path,
        library,
        policy: await library.policy(),
        dryRun,
      })
      if (result.deleted) bus.emit('library:changed', { reason: 'removed', paths: [path] })
      return result
    },

    'library:locate-base': async ({ overlay, base, force }) => {
      const result = await locateBase({
        overlay,
        base,
        force,
        library,
        policy: await library.policy(),
      })
      bus.emit('library:changed', { reason: 'modified', paths: [overlay] })
      return result
    },
  }
}
