import { dirname } from 'node:path'
import { EngineError } from '../../engine/errors'
import { openImage } from '../../engine/open'
import { findDependents } from '../../engine/ops/blast-radius'
import { imageInfo } from '../../engine/ops/info'
import type { AreaHandlers } from '../handler-table'
import { allocationBuckets, findWritten, mapRange } from '../image-queries'
import type { IpcServices } from '../services'

/**
 * `image:*`: read-only questions about one image that answer at once (calls, never jobs):
 * what `addcow info` and `addcow map` show, the allocation summed for drawing, and which other
 * images read through its base. Images open read-only with the library's name policy.
 */
export function imageHandlers(services: IpcServices): AreaHandlers<'image'> {
  const { library, images } = services

  return {
    'image:get-info': async ({ path, backingChain }) => ({
      layers: await imageInfo(path, { backingChain, policy: await library.policy() }),
    }),

    'image:get-map': async ({ path, offset, length, limit }) =>
      images.read(path, (disk) => mapRange(disk, offset, length, limit)),

    'image:get-allocation': async ({ path, buckets, offset, length }) =>
      images.read(path, (disk) => allocationBuckets(disk, buckets, offset, length)),

    'image:find-written': async ({ path, offset }) =>
      images.read(path, (disk) => findWritten(disk, offset)),

    'image:get-blast-radius': async ({ overlay }) => {
      const disk = await openImage(overlay, { readOnly: true, policy: await library.policy() })
      let base: string
      try {
        if (!disk.backing) {
          throw new EngineError(
            'BAD_ARGUMENT',
            `${overlay} has no backing file, so a commit has nowhere to go.`,
            { path: overlay, field: 'backing' },
          )
        }
        base = disk.backing.path
      } finally {
        await disk.close()
      }
      return findDependents(base, { library, folders: [dirname(overlay)], exclude: [overlay] })
    },
  }
}
