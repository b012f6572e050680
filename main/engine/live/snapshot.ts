import { rm } from 'node:fs/promises'
import { basename, dirname, extname, join, relative, resolve } from 'node:path'
import type { LiveSnapshotResult } from '../../../shared/live-control'
import { EngineError, quote, throwIfAborted } from '../errors'
import { pathExists } from '../fs'
import { defaultImageName } from '../formats/add-cow/create'
import { makePolicy, STRICT_POLICY, type NamePolicy } from '../names'
import { openImage } from '../open'
import { createOverlay } from '../ops/create'
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
 * The overlay is created first, while the guest goes on writing (its size and base come from
 * the top's header, which a write never changes). Then one quiesce: requests are held, those in
 * flight finish, the top is flushed (its data and bitmap are now the frozen layer's, durable),
 * the new top is opened with its chain (the frozen layer read-only under it), the chain's locks
 * move (new top exclusive, frozen layer shared, so qemu-img and `addcow convert` may read it),
 * the top is swapped and the old handle closed; then the held requests go to the new top. A
 * failure before the swap removes the new files and leaves the export as it was.
 */
export async function liveSnapshot(
  target: LiveTarget,
  options: LiveSnapshotOptions = {},
): Promise<LiveSnapshotResult> {
  const { live } = target
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
    ...(top.format === 'add-cow' ? { clusterSize: top.allocationUnit } : {}),
    ...(target.policy ? { policy: target.policy } : {}),
  })
  try {
    throwIfAborted(options.signal, 'snapshot')
    const policy = trustingNewLinks(target.policy ?? STRICT_POLICY, image, top.path)
    options.describe?.(`switching the export to ${basename(overlay)}`)
    let pauseMs = 0
    await live.quiesce(async (current) => {
      const started = performance.now()
      const next = await openImage(overlay, { format: 'add-cow', readOnly: false, policy })
      try {
        await target.locks.retarget(next)
      } catch (error) {
        await next.close().catch(() => undefined)
        throw error
      }
      const old = live.swap(next)
      pauseMs = performance.now() - started
      // The frozen layer was flushed by the quiesce; its handle (and its chain) go now, the
      // new top's chain has its own read-only handles on the same files.
      await old.close().catch(() => undefined)
      return current
    })
    return { top: overlay, frozen: top.path, pauseMs: Math.round(pauseMs * 10) / 10 }
  } catch (error) {
    if (live.current.path !== overlay) {
      await rm(overlay, { force: true }).catch(() => undefined)
      await rm(image, { force: true }).catch(() => undefined)
    }
    throw error
  }
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
