import { buildGraph, dependentsOf, nodeKey } from './graph'
import { EngineError } from './errors'
import type { Library } from './library'

/** How an image depends on the one being deleted. */
export type DependentHow = 'reads' | 'not-read' | 'unknown'

/**
 * The images that depend on `path`, from the dependency graph (main/engine/graph): every image
 * whose guest view would change without it, transitively (`reads`), those that could not be
 * ruled out (`unknown`: unreadable, unparseable, or naming no file the graph can point at), and
 * the fully allocated images that name it but never read it (`not-read`: listed, harmless).
 * Searched in the image's folder and in the library's images and their folders.
 *
 * The one door "Delete files" uses for "who depends on this image".
 */
export async function dependentsForDelete(
  path: string,
  library: Library | null,
): Promise<{ path: string; how: DependentHow }[]> {
  const graph = await buildGraph({ library, extra: [path] })
  const key = nodeKey(graph, path)
  const found: { path: string; how: DependentHow }[] = dependentsOf(graph, key).map(
    (dependent) => ({ path: dependent.path, how: dependent.dependsHow }),
  )
  for (const node of graph.nodes.values()) {
    if (node.parent !== key || node.edge !== 'not-read') continue
    if (!found.some((entry) => entry.path === node.path)) {
      found.push({ path: node.path, how: 'not-read' })
    }
  }
  return found.sort((a, b) => a.path.localeCompare(b.path))
}

/**
 * HAS_DEPENDENTS for an operation that would change what `image` holds under the images that
 * read through it (`blocking`: the `reads` and `unknown` ones), naming the first five; what the
 * user can do is `advice`.
 */
export function dependentsError(
  image: string,
  doing: string,
  blocking: readonly { path: string; how: DependentHow }[],
  advice: string,
): EngineError {
  const names = blocking.map(
    (dependent) =>
      `${dependent.path} (${dependent.how === 'reads' ? 'reads through it' : 'could not be checked'})`,
  )
  return new EngineError(
    'HAS_DEPENDENTS',
    `Refusing to ${doing} ${image}: ${blocking.length} other image(s) use it as their base: ${names.slice(0, 5).join(', ')}${names.length > 5 ? ', …' : ''}. ${advice}`,
    { path: image, field: 'dependents', value: blocking.map((dependent) => dependent.path) },
  )
}
