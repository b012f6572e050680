import { dirname, resolve } from 'node:path'
import { assertAbilities, type OperationOptions } from '../disk'
import { dependentsError, dependentsForDelete } from '../dependents'
import { EngineError } from '../errors'
import type { Library } from '../library'
import type { NamePolicy } from '../names'
import { COMMIT_NEEDS, emptyRange, type Overlay } from './commit'
import { runOverlayJob, type OverlayJob } from './job'

/** What `addcow reset` needs. */
export interface ResetOptions extends OperationOptions {
  /** The add-cow overlay to empty. */
  overlay: string
  policy?: NamePolicy
  /** Where to look for the images that read through the overlay (beside its own folder). */
  library?: Library
  /** Only say what would be lost: open the overlay read-only and change nothing. */
  dryRun?: boolean
}

/** What a reset threw away (or, with `dryRun`, would throw away). */
export interface ResetResult {
  overlay: string
  /** The base the overlay reads again, as its chain resolves it. */
  base: string
  /** The image file that held the overlay's data (its blocks are freed). */
  image: string
  /** Clusters the overlay held, and the guest bytes they covered. */
  clusters: number
  bytes: number
  /** The overlay was flattened (ALL_ALLOCATED): every cluster was its own. */
  wasFlattened: boolean
  /** How the image file was emptied: holes punched or zeros written; null for a dry run. */
  emptiedBy: 'punched' | 'zeroed' | null
  dryRun: boolean
}

/**
 * `reset`: empty an overlay so it reads its base again, as if just created; its names (base,
 * image file, formats) and its files stay. The discard half of commit's emptying, without the
 * copy: every bit is cleared and made durable, then the image file's blocks are freed (a crash
 * in between leaves leaked bytes in unallocated clusters, never a wrong guest view). The
 * overlay is locked exclusively, so a served or running overlay (an export, QEMU, qemu-img)
 * is refused with BUSY, and one other images read through (HAS_DEPENDENTS: their guest view
 * would change). A flattened overlay first hands ALL_ALLOCATED over to a full bitmap.
 */
export async function resetOverlay(options: ResetOptions): Promise<ResetResult> {
  const dryRun = options.dryRun ?? false
  return runOverlayJob(
    'reset',
    {
      ...options,
      path: options.overlay,
      readOnly: dryRun,
      needs: dryRun ? COMMIT_NEEDS : [...COMMIT_NEEDS, 'clearAllAllocatedAndClose'],
      doing: 'reset it',
    },
    (job) => resetBody(job, dryRun, options.library ?? null),
  )
}

async function resetBody(
  job: OverlayJob,
  dryRun: boolean,
  library: Library | null,
): Promise<ResetResult> {
  let overlay = job.disk as Overlay
  const link = overlay.backingLink()
  if (!link) {
    throw new EngineError(
      'NOT_CAPABLE',
      `${overlay.path} has no base to reset to: emptying it would leave a disk of zeros.`,
      { path: overlay.path, field: 'backing' },
    )
  }
  // Images on this overlay (a live snapshot's new top, a clone) would see its data vanish.
  const blocking = (await dependentsForDelete(overlay.path, library)).filter(
    (dependent) => dependent.how !== 'not-read',
  )
  if (blocking.length > 0)
    throw dependentsError(overlay.path, 'reset', blocking, 'Commit, flatten or delete them first.')
  await job.lockChain()
  const wasFlattened = overlay.isAllAllocated()
  const { allocated, total } = overlay.allocationCount()
  const clusters = wasFlattened ? total : allocated
  const result: ResetResult = {
    overlay: overlay.path,
    // A flattened overlay does not open its base: its name, resolved as stored, until reopened.
    base: overlay.backing?.path ?? resolve(dirname(overlay.path), link.name),
    image: overlay.dataFile().path,
    clusters,
    bytes: Math.min(clusters * overlay.allocationUnit, overlay.size),
    wasFlattened,
    emptiedBy: null,
    dryRun,
  }
  if (dryRun) return result
  if (wasFlattened) {
    job.release(overlay)
    await overlay.clearAllAllocatedAndClose!()
    overlay = (await job.reopen()) as Overlay
    assertAbilities(overlay, COMMIT_NEEDS, 'reset')
    // Reopened, it follows its base through the name policy (refused names fail the open).
    await job.lockChain()
    if (overlay.backing) result.base = overlay.backing.path
  }
  job.throwIfCancelled()
  const { punching } = await emptyRange(overlay, 0, total)
  result.emptiedBy = await punching
  return result
}
