import { rm } from 'node:fs/promises'
import { dependentsError, dependentsForDelete, type DependentHow } from '../dependents'
import { realPath } from '../fs'
import type { Library } from '../library'
import type { NamePolicy } from '../names'
import { imageInfo } from './info'
import { fileLocks, runJob } from './job'

/** What {@link deleteImageFiles} found, and did unless it was a dry run. */
export interface DeleteResult {
  image: string
  /** The image's own files: for add-cow, the add-cow file then its image file. */
  files: string[]
  /** Images that name one of those files as their base, and how they use it. */
  dependents: { path: string; how: DependentHow }[]
  deleted: boolean
}

/**
 * Delete an image's own files (an add-cow file together with its image file; never a base it
 * stands on) and remove it from the library. Refused (HAS_DEPENDENTS, naming them) while another
 * image reads through one of these files, or might (it could not be read); an image that names
 * it but never reads it (fully allocated) is listed, not a reason to refuse. The files are
 * locked exclusively first (BUSY while served or running), and the add-cow file goes first, so
 * an interruption leaves at worst a stray image file, never an overlay without its data.
 */
export async function deleteImageFiles(options: {
  path: string
  library: Library
  policy?: NamePolicy
  dryRun?: boolean
}): Promise<DeleteResult> {
  const image = await realPath(options.path)
  const [top] = await imageInfo(image, {
    backingChain: false,
    ...(options.policy ? { policy: options.policy } : {}),
  })
  const dataFile = top?.['full-data-file']
  const files = [image, ...(dataFile && dataFile !== image ? [await realPath(dataFile)] : [])]
  const dependents: DeleteResult['dependents'] = []
  for (const file of files) {
    for (const dependent of await dependentsForDelete(file, options.library)) {
      if (!files.includes(dependent.path) && !dependents.some((d) => d.path === dependent.path))
        dependents.push(dependent)
    }
  }
  const result: DeleteResult = { image, files, dependents, deleted: false }
  const blocking = dependents.filter((dependent) => dependent.how !== 'not-read')
  if (blocking.length > 0 && !options.dryRun)
    throw dependentsError(image, 'delete', blocking, 'Delete or flatten them first.')
  if (options.dryRun) return result
  await runJob('delete', { doing: 'delete it' }, async (job) => {
    await job.lock(await fileLocks(files, 'exclusive'))
    for (const file of files) await rm(file, { force: true })
  })
  await options.library.removeImages([options.path, image])
  return { ...result, deleted: true }
}
