import type { OperationOptions } from '../disk'
import { EngineError } from '../errors'
import { realPath } from '../fs'
import { buildGraph, dependentsOf, type GraphDependent } from '../graph'
import type { Library } from '../library'
import { assertFollowable, judgeName, type NamePolicy } from '../names'
import { openImage } from '../open'

/** An image whose guest view a commit (or its rollback) would change, or might. */
export interface DependentImage {
  path: string
  /** Its format, or null when it could not be told. */
  format: string | null
  /** The backing name as the image stores it (null when its header could not be read). */
  backingName: string | null
  /** `reads`: it reads through the base; `unknown`: it could not be checked. */
  dependsHow: 'reads' | 'unknown'
  /** The chain from this image down to the base (real paths, this image first). */
  through: string[]
  /** Why it could not be checked (a sentence), for `unknown`. */
  problem: string | null
}

/** What a commit into a base would change: the images to confirm, before anything is written. */
export interface BlastRadius {
  overlay: string
  base: string
  /** Images that read through the base, transitively, stopping at fully allocated layers. */
  dependents: DependentImage[]
  /** Images that could not be checked; treated as affected unless the user says otherwise. */
  unchecked: DependentImage[]
  /** Folders searched (the base's, the overlay's, every library image's). */
  searched: string[]
  /** Folders cut short, and a note when the graph stopped at its node limit. */
  truncated: string[]
}

function toDependent(node: GraphDependent): DependentImage {
  return {
    path: node.path,
    format: node.format,
    backingName: node.backingName,
    dependsHow: node.dependsHow,
    through: node.through,
    problem:
      node.dependsHow === 'reads'
        ? null
        : (node.problem ??
          (node.parentProblem === 'refused-name'
            ? `its backing name '${node.backingName ?? ''}' names no file this tool can check`
            : `it stands on ${node.through[1] ?? 'an image'}, which could not be checked`)),
  }
}

/**
 * The blast radius of writing `overlay`'s clusters into `base` (both paths; real paths are
 * used): every image whose guest view changes, from the dependency graph (engine/graph). The
 * overlay itself and what stands on it are left out: their guest view does not change, since
 * the base gets exactly the overlay's data there. Rollback rewrites the same base, so it asks
 * the same question.
 */
export async function commitBlastRadius(
  options: OperationOptions & {
    overlay: string
    base: string
    library: Library | null
    policy?: NamePolicy
  },
): Promise<BlastRadius> {
  const overlay = await realPath(options.overlay)
  const base = await realPath(options.base)
  const graph = await buildGraph({
    library: options.library,
    extra: [overlay, base],
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.policy ? { policy: options.policy } : {}),
  })
  const affected = dependentsOf(graph, base).filter(
    (node) => node.path !== overlay && !node.through.includes(overlay),
  )
  return {
    overlay,
    base,
    dependents: affected.filter((node) => node.dependsHow === 'reads').map(toDependent),
    unchecked: affected.filter((node) => node.dependsHow === 'unknown').map(toDependent),
    searched: graph.searched,
    truncated: [
      ...graph.truncated,
      ...(graph.nodeLimitHit ? [`(stopped after ${graph.nodes.size} images)`] : []),
    ],
  }
}

/**
 * The blast radius of committing `overlay` into its base, without writing anything: what
 * `addcow commit --dry-run` prints and the commit wizard shows. The base is the file the
 * overlay's stored name leads to, judged by the name policy as the commit itself would.
 */
export async function planCommit(
  options: OperationOptions & { overlay: string; library: Library; policy?: NamePolicy },
): Promise<BlastRadius> {
  const policy = options.policy ?? (await options.library.policy())
  const disk = await openImage(options.overlay, { readOnly: true, policy })
  let base: string
  try {
    const link = disk.backingLink?.() ?? null
    if (link === null) {
      throw new EngineError(
        'BAD_ARGUMENT',
        `${disk.path} has no backing file, so a commit has nowhere to go.`,
        { path: disk.path, field: 'backing name' },
      )
    }
    if (disk.backing) {
      base = disk.backing.path
    } else {
      // A flattened overlay does not open its base: judge the name as the commit does.
      const verdict = await judgeName(disk.path, link.name, link.format, policy)
      assertFollowable(disk.path, 'backing file', verdict)
      base = verdict.resolved
    }
  } finally {
    await disk.close()
  }
  return commitBlastRadius({ ...options, base, policy })
}

/**
 * The CONFIRMATION_REQUIRED error for a non-empty radius, or null when nothing else changes
 * (unchecked images count unless `ignoreUnchecked`). `doing`: "Committing X into Y".
 */
export function blastRadiusRefusal(
  radius: BlastRadius,
  doing: string,
  ignoreUnchecked: boolean,
): EngineError | null {
  const unchecked = ignoreUnchecked ? [] : radius.unchecked
  if (radius.dependents.length === 0 && unchecked.length === 0) return null
  const list = (images: DependentImage[]): string =>
    images
      .slice(0, 5)
      .map((image) =>
        image.through.length > 2 ? `${image.path} (through ${image.through[1]})` : image.path,
      )
      .join(', ') + (images.length > 5 ? ', …' : '')
  const parts: string[] = []
  if (radius.dependents.length > 0) {
    parts.push(
      `would change the guest view of ${radius.dependents.length} other image(s) that read through ${radius.base}: ${list(radius.dependents)}`,
    )
  }
  if (unchecked.length > 0) {
    parts.push(
      `might change that of ${unchecked.length} image(s) that could not be checked: ${list(unchecked)}`,
    )
  }
  const hint =
    unchecked.length > 0
      ? 'pass --force to go ahead anyway, or --ignore-unchecked if the images that could not be checked do not use this base'
      : 'pass --force to go ahead anyway'
  return new EngineError('CONFIRMATION_REQUIRED', `${doing} ${parts.join(', and ')}; ${hint}.`, {
    path: radius.base,
    field: 'dependents',
    value: [...radius.dependents, ...unchecked].map((image) => image.path),
  })
}

/**
 * The blast radius of committing `overlay` into `base`, refused (CONFIRMATION_REQUIRED) while
 * other images read through the base, or are unchecked, unless `force`: the rule offline commit,
 * its rollback and live commit share.
 */
export async function guardCommitRadius(
  options: OperationOptions & {
    overlay: string
    base: string
    library: Library | null
    policy?: NamePolicy
    force?: boolean
    ignoreUnchecked?: boolean
    /** What the refusal says is refused (default "Committing OVERLAY into BASE"). */
    doing?: string
  },
): Promise<BlastRadius> {
  const radius = await commitBlastRadius(options)
  const refusal = blastRadiusRefusal(
    radius,
    options.doing ?? `Committing ${options.overlay} into ${options.base}`,
    options.ignoreUnchecked ?? false,
  )
  if (refusal && !options.force) throw refusal
  return radius
}
