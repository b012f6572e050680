import { dirname } from 'node:path'
import { realPath } from './fs'
import type { Library } from './library'
import { findDependents } from './ops/blast-radius'
import { imageInfo } from './ops/info'

/** How an image depends on the one being deleted. */
export type DependentHow = 'reads' | 'not-read' | 'unknown'

/**
 * The images that name `path` as their base, and whether each reads through it: `reads`,
 * `not-read` (fully allocated, so it never reads its base) or `unknown` (it could not be
 * opened). Searched in the image's folder and in the library's images and their folders.
 *
 * The one door "Delete files" uses for "who depends on this image": today over
 * ops/blast-radius.ts; at the merge of the dependency graph (issue 12 item 1) it becomes a call
 * of the graph's dependentsOf, with the same answer shape.
 */
export async function dependentsForDelete(
  path: string,
  library: Library | null,
): Promise<{ path: string; how: DependentHow }[]> {
  const target = await realPath(path)
  const radius = await findDependents(target, {
    ...(library ? { library } : {}),
    folders: [dirname(target)],
  })
  const policy = library ? await library.policy() : undefined
  const found: { path: string; how: DependentHow }[] = []
  for (const dependent of radius.dependents) {
    try {
      const [top] = await imageInfo(dependent.path, { ...(policy ? { policy } : {}) })
      found.push({ path: dependent.path, how: top?.['all-allocated'] ? 'not-read' : 'reads' })
    } catch {
      found.push({ path: dependent.path, how: 'unknown' })
    }
  }
  return found
}
