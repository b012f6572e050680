import { rm } from 'node:fs/promises'
import { basename, dirname, extname, join, relative, resolve } from 'node:path'
import type { LiveSnapshotResult } from '../../../shared/live-control'
import { EngineError, quote, throwIfAborted } from '../errors'
import { pathExists, realPath } from '../fs'
import { defaultImageName } from '../formats/add-cow/create'
import type { Disk } from '../disk'
import { makePolicy, STRICT_POLICY, type NamePolicy } from '../names'
import { openImage, overrideDisk } from '../open'
import { createOverlay } from '../ops/create'
import { findFormat } from '../registry'
import { fingerprintBase } from '../ops/drift'
import type { LiveTarget } from './registry'

/** Default snapshots tried before giving up on finding a free name. */
const MAX_SNAPSHOT_NUMBER = 9999

/** How {@link liveSnapshot} names the new top. */
export interface LiveSnapshotOptions {
  /**
   * The new top's path (relative: to the served top's folder); default `<top>-snapN.add-cow`
   * beside the top, N the first number whose overlay and image file are both free.
   */
  name?: string
  signal?: AbortSignal
  /** Say what the snapshot is doing (the job's detail line). */
  describe?: (detail: string) => void
}

/**
 * A live snapshot (issue 17 item 1): freeze the top the export serves and put a new, empty
 * add-cow overlay on it, served from then on without the clients reconnecting.
 *
 * Everything that can happen while the guest writes happens before the pause: the overlay is
 * created (its size and base come from the top's header, which a write never changes), opened
 * with the served top itself as its backing disk (nothing below is reopened), its files
 * locked, and the top flushed once. Then one quiesce: requests are held, those in flight
 * finish, the top is flushed again (only the last moments' writes), the locks change mode (new
 * top exclusive already, the frozen layer shared, so qemu-img and `addcow convert` may read
 * it), the top is frozen (read-only from now on, same handle) and swapped; then the held
 * requests go to the new top. A top whose format cannot freeze (raw) is reopened read-only
 * under the new top inside the pause instead. A failure before the swap removes the new files
 * and leaves the export as it was.
 */
export async function liveSnapshot(
  target: LiveTarget,
  options: LiveSnapshotOptions = {},
): Promise<LiveSnapshotResult> {
  const { live, locks } = target
  const top = live.current
  if (top.readOnly) {
    throw new EngineError(
      'READ_ONLY',
      `${top.path} is served read-only; a live snapshot freezes a top that is written.`,
      { path: top.path },
    )
  }
  const overlay = await chooseName(top.path, options.name)
  const image = resolve(dirname(overlay), defaultImageName(overlay))
  if (await pathExists(image)) {
    throw new EngineError(
      'ALREADY_EXISTS',
      `The snapshot's image file ${image} already exists; refusing to reuse its data. Choose another --name.`,
      { path: image, field: 'name', value: options.name ?? overlay },
    )
  }
  options.describe?.(`creating ${basename(overlay)}`)
  await createOverlay({
    overlay,
    backing: relative(dirname(overlay), top.path) || basename(top.path),
    backingFormat: top.format,
    // A top whose clusters an overlay can share (add-cow) gives the new top its cluster size.
    ...(findFormat(top.format)?.sharesClusterSize ? { clusterSize: top.allocationUnit } : {}),
    ...(target.policy ? { policy: target.policy } : {}),
  })
  const policy = trustingNewLinks(target.policy ?? STRICT_POLICY, image, top.path)
  const open = (backingDisk?: Disk): Promise<Disk> =>
    openImage(overlay, {
      format: 'add-cow',
      readOnly: false,
      policy,
      ...(backingDisk ? { backingDisk } : {}),
    })
  // The served top under the new one, closed with it only once the snapshot took place.
  const frozen = top.freeze ? closedOnlyWhenAdopted(top) : null
  let next: Disk | null = null
  let swapped = false
  try {
    if (frozen) {
      next = await open(frozen.disk)
      await locks.lockAdded(next)
    }
    throwIfAborted(options.signal, 'snapshot')
    // A top that cannot freeze is flushed inside the pause: flush it once before, so that the
    // flush in the pause has only the last moments to sync. (A frozen top is flushed after the
    // pause, once: a flush before would only add an fsync while the guest writes.)
    if (!frozen) await live.flush()
    options.describe?.(`switching the export to ${basename(overlay)}`)
    if (frozen) {
      // The pause is the swap alone: the old top takes no write from then on, and the live
      // disk flushes it with the new top until it is frozen, just after.
      await live.quiesce(
        async (current) => {
          assertStillServed(current, top)
          live.swap(next!)
          swapped = true
        },
        { flush: false },
      )
    } else {
      await live.quiesce(async (current) => {
        assertStillServed(current, top)
        next = await open()
        await locks.retarget(next)
        live.swap(next)
        swapped = true
        await top.close().catch(() => undefined)
        live.settle(top)
      })
    }
  } catch (error) {
    if (!swapped) {
      await next?.close().catch(() => undefined)
      await locks.retarget(top).catch(() => undefined)
      await rm(overlay, { force: true }).catch(() => undefined)
      await rm(image, { force: true }).catch(() => undefined)
    }
    throw error
  }
  const held = live.lastQuiesce!
  if (frozen) {
    frozen.adopt()
    // Now durable and read-only on the same handle, then readable by others (locked shared).
    options.describe?.(`freezing ${basename(top.path)}`)
    await top.freeze!()
    await locks.retarget(live.current)
  }
  const warning = await recordInLibrary(target, overlay, image, top).catch(
    (error: unknown) =>
      `The snapshot took place, but the library could not record it: ${error instanceof Error ? error.message : String(error)}`,
  )
  const tenths = (ms: number): number => Math.round(ms * 10) / 10
  return {
    top: overlay,
    frozen: top.path,
    ...(warning ? { warning } : {}),
    pauseMs: tenths(held.totalMs),
    phases: {
      drainMs: tenths(held.drainMs),
      flushMs: tenths(held.flushMs),
      switchMs: tenths(held.runMs),
    },
  }
}

/**
 * Record the new top in the target's library as `addcow create` records an overlay: the image,
 * the names it stores as trusted, and the frozen layer's fingerprint, taken now that it no
 * longer changes, so the drift guard refuses the new top if the frozen layer is written later
 * (served again by mistake).
 */
async function recordInLibrary(
  target: LiveTarget,
  overlay: string,
  image: string,
  frozen: Disk,
): Promise<void> {
  const library = target.library
  if (!library) return
  const from = await realPath(overlay)
  await library.trust(
    [
      { from, to: await realPath(image) },
      { from, to: await realPath(frozen.path) },
    ],
    'created',
  )
  await library.recordBaseFingerprint(await fingerprintBase(from, frozen))
  await library.addImages([overlay])
}

/** BUSY when another live operation replaced the top since the snapshot began. */
function assertStillServed(current: Disk, top: Disk): void {
  if (current !== top)
    throw new EngineError('BUSY', `The export's top changed during the snapshot of ${top.path}.`, {
      path: top.path,
    })
}

/**
 * `disk` as a backing disk whose close() does nothing until {@link adopt}: a new top opened on
 * it may be closed (a failed snapshot) without closing the disk the export still serves.
 */
function closedOnlyWhenAdopted(disk: Disk): { disk: Disk; adopt: () => void } {
  let adopted = false
  const wrapped = overrideDisk(disk, {
    close: () => (adopted ? disk.close() : Promise.resolve()),
  })
  return { disk: wrapped, adopt: () => (adopted = true) }
}

/** The new top's absolute path: the name given (checked free), or the first free default. */
async function chooseName(topPath: string, name: string | undefined): Promise<string> {
  const folder = dirname(topPath)
  if (name !== undefined) {
    const path = resolve(folder, name)
    if (await pathExists(path)) {
      throw new EngineError('ALREADY_EXISTS', `${path} already exists; refusing to overwrite it.`, {
        path,
        field: 'name',
        value: name,
      })
    }
    return path
  }
  const stem = basename(topPath, extname(topPath)).replace(/-snap\d+$/, '')
  for (let number = 1; number <= MAX_SNAPSHOT_NUMBER; number++) {
    const path = join(folder, `${stem}-snap${number}.add-cow`)
    const image = join(folder, defaultImageName(path))
    if (!(await pathExists(path)) && !(await pathExists(image))) return path
  }
  throw new EngineError(
    'ALREADY_EXISTS',
    `Every default snapshot name from ${quote(`${stem}-snap1.add-cow`)} to -snap${MAX_SNAPSHOT_NUMBER} is taken in ${folder}; give --name.`,
    { path: folder, field: 'name' },
  )
}

/**
 * `policy`, also following the two names the snapshot itself wrote into the new top (its image
 * file and the frozen layer), which lie outside its folder when --name put it elsewhere.
 */
function trustingNewLinks(policy: NamePolicy, image: string, frozen: string): NamePolicy {
  return makePolicy({
    allowAny: policy.allowAny,
    allowedPaths: [...policy.allowedPaths, image, frozen],
    isTrustedPair: (namingFile, target) => policy.isTrustedPair(namingFile, target),
  })
}
