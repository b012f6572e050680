import { stat } from 'node:fs/promises'
import type { ImageInfo, NameVerdictReason } from '../../../shared/image-types'
import { realPath } from '../fs'
import type { BaseFingerprint, Library } from '../library'
import type { NamePolicy } from '../names'
import { openImage } from '../open'
import { checkBaseDrift } from './drift'
import { imageInfo } from './info'

/**
 * Where an image's base stands: the one answer the Library, Chains, Check and Launch show
 * (issue 12 item 5), computed here and nowhere else.
 *
 * - `none`: no backing file;
 * - `ok`: the base is found, followed, and matches the fingerprint recorded for this overlay;
 * - `unverified`: the base is found and followed, but no fingerprint was ever recorded here
 *   (made on another machine, or the library moved), so a change could not be seen;
 * - `changed`: it differs from the recorded fingerprint;
 * - `missing`: the named file does not exist;
 * - `refused`: the name policy does not follow the name;
 * - `not-read`: the overlay is fully allocated (flattened), so its base is never read.
 */
export type BaseStatus =
  'none' | 'ok' | 'unverified' | 'changed' | 'missing' | 'refused' | 'not-read'

/** An image's base as {@link baseState} judges it. */
export interface BaseState {
  status: BaseStatus
  /** The name as the image stores it, and the path it resolves to. */
  stored: string | null
  path: string | null
  reason: NameVerdictReason | null
  /** With `changed`: one phrase per difference (empty when judged cheaply). */
  changes: string[]
}

/**
 * Judge the base from `info` output (the top layer and the chain below it) and the fingerprint
 * recorded for the overlay. Cheap: the recorded path, size, and every file's length and
 * modification time; the sampled content hash is compared only by {@link baseState} with
 * `deep`, which reads the base.
 */
export async function baseStateFromInfo(
  layers: readonly ImageInfo[],
  recorded: BaseFingerprint | null,
): Promise<BaseState> {
  const top = layers[0]
  const stored = top?.['backing-filename']
  if (!top || stored === undefined) {
    return { status: 'none', stored: null, path: null, reason: null, changes: [] }
  }
  const verdict = top.names?.find((name) => name.stored === stored)
  const path = verdict?.resolved ?? top['full-backing-filename'] ?? null
  const reason = verdict?.reason ?? null
  const state = (status: BaseStatus, changes: string[] = []): BaseState => ({
    status,
    stored,
    path,
    reason,
    changes,
  })
  if (verdict?.reason === 'missing') return state('missing')
  if (!verdict?.followed) return state('refused')
  const below = layers[1]
  if (!below) {
    // Not opened although followable: the chain already holds it, as its own image file
    // ('same-file': the image file is the base) or lower down (a loop).
    const same = top.names?.some((name) => name.reason === 'same-file') ?? false
    return { ...state('refused'), reason: same ? 'same-file' : 'loop' }
  }
  if (top['all-allocated']) return state('not-read')
  if (!recorded) return state('unverified')
  const changes = await quickChanges(recorded, below)
  return state(changes.length > 0 ? 'changed' : 'ok', changes)
}

/** What differs between a recorded fingerprint and the base's path, size and files. */
async function quickChanges(recorded: BaseFingerprint, base: ImageInfo): Promise<string[]> {
  const changes: string[] = []
  const now = await realPath(base.filename)
  if (recorded.base !== now) changes.push(`the overlay now uses ${now}, not ${recorded.base}`)
  if (recorded.size !== base['virtual-size'])
    changes.push(`size ${recorded.size} → ${base['virtual-size']} bytes`)
  for (const file of recorded.files) {
    const info = await stat(file.path).catch(() => null)
    if (!info) changes.push(`${file.path} is gone`)
    else if (info.size !== file.length)
      changes.push(`${file.path} length ${file.length} → ${info.size}`)
    else if (info.mtimeMs !== file.mtimeMs) changes.push(`${file.path} was modified`)
  }
  return changes
}

/**
 * The state of the base of the image at `path`, for one image (Check, Launch, the CLI). With
 * `deep`, a base that passes the cheap test is also sampled (up to 4 MiB read), as the drift
 * guard of commit, serve and launch does.
 */
export async function baseState(
  path: string,
  options: { library: Library; policy?: NamePolicy; deep?: boolean },
): Promise<BaseState> {
  const layers = await imageInfo(path, {
    backingChain: true,
    ...(options.policy ? { policy: options.policy } : {}),
  })
  const recorded = await options.library.baseFingerprint(await realPath(path))
  const state = await baseStateFromInfo(layers, recorded)
  if (!options.deep || state.status !== 'ok') return state
  const disk = await openImage(path, {
    readOnly: true,
    ...(options.policy ? { policy: options.policy } : {}),
  })
  try {
    const report = await checkBaseDrift(disk, options.library)
    return report.status === 'changed'
      ? { ...state, status: 'changed', changes: report.changes }
      : state
  } finally {
    await disk.close()
  }
}
