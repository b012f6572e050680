import { realPath } from '../../engine/fs'
import { withoutRunningProcess } from '../../engine/library'
import { baseState } from '../../engine/ops/base-state'
import { planCommit } from '../../engine/ops/blast-radius'
import { interruptedCommitNow } from '../../engine/ops/commit'
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

    'image:get-blast-radius': async ({ overlay }) =>
      planCommit({ overlay, library, policy: await library.policy() }),

    'image:get-base-state': async ({ path }) =>
      baseState(path, { library, policy: await library.policy(), deep: true }),

    'image:get-commit-state': async ({ overlay }) => {
      // A live commit still running is not interrupted; one a crash cut short is.
      const record = await interruptedCommitNow(
        await library.interruptedCommit(await realPath(overlay)),
      )
      if (!record) return { commit: null }
      return { commit: withoutRunningProcess(record) }
    },
  }
}
