import { dirname, isAbsolute, relative, resolve, sep } from 'node:path'
import { EngineError } from '../errors'
import { pathExists, realPath } from '../fs'
import type { Library } from '../library'
import type { NamePolicy } from '../names'
import { openImage, probeFormat } from '../open'
import { loadDriver } from '../registry'
import { fingerprintBase } from './drift'
import { imageInfo } from './info'
import { rebaseOverlay } from './rebase'

/** What `addcow locate` needs. */
export interface LocateOptions {
  /** The overlay whose base was moved or renamed. */
  overlay: string
  /** The file the user says is its base now. */
  base: string
  /** Its format; default: the format the overlay records for its base (never probed). */
  format?: string
  /** Relink although the size or the sampled content differ from what is expected. */
  force?: boolean
  library: Library
  policy?: NamePolicy
}

/** What {@link locateBase} checked and stored. */
export interface LocateResult {
  overlay: string
  base: string
  format: string
  /** The name now stored in the overlay: relative when the base lies in its folder. */
  stored: string
  relative: boolean
  /** The size the base was expected to have (recorded, else the overlay's) and its size. */
  expectedSize: number
  size: number
  /** `matched`: the recorded fingerprint's sampled content matches; `not-recorded`: none. */
  fingerprint: 'matched' | 'not-recorded' | 'differs'
}

/**
 * Point an overlay whose base moved at the file the user found, after checking that it is the
 * same base: its virtual size equals the recorded one (or, with no fingerprint recorded, the
 * overlay's), and when a fingerprint was recorded its sampled content matches. A mismatch is
 * refused (BASE_CHANGED, naming both values) unless `force`. The name is stored relative when
 * the base lies inside the overlay's folder, else absolute; the new pair is trusted (the user
 * chose it) and the base's fingerprint recorded anew. The rewrite is rebase -u's (byte-exact
 * header, atomic rename), so its checks (loops, refused names) apply too.
 */
export async function locateBase(options: LocateOptions): Promise<LocateResult> {
  const overlay = await realPath(options.overlay)
  const driver = await loadDriver(await probeFormat(overlay), overlay)
  const links = await driver.readLinks?.(overlay)
  if (!links?.backing) {
    throw new EngineError('BAD_ARGUMENT', `${overlay} has no base to locate.`, {
      path: overlay,
      field: 'backing name',
    })
  }
  const wanted = resolve(options.base)
  if (!(await pathExists(wanted))) {
    throw new EngineError('NOT_FOUND', `${wanted} does not exist.`, { path: wanted })
  }
  const base = await realPath(wanted)
  if (base === overlay) {
    throw new EngineError('SAME_FILE', `${overlay} cannot be its own base.`, { path: overlay })
  }
  const format = options.format ?? links.backing.format
  if (!format) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `${overlay} does not record its base's format; give it (-F FMT), as a raw file is never probed.`,
      { path: overlay, field: 'backing format' },
    )
  }
  const recorded = await options.library.baseFingerprint(overlay)
  const [top] = await imageInfo(overlay, {
    backingChain: false,
    ...(options.policy ? { policy: options.policy } : {}),
  })
  const expectedSize = recorded?.size ?? top?.['virtual-size'] ?? 0
  const disk = await openImage(base, {
    format,
    readOnly: true,
    ...(options.policy ? { policy: options.policy } : {}),
  })
  let current
  try {
    current = await fingerprintBase(overlay, disk)
  } finally {
    await disk.close()
  }
  const fingerprint: LocateResult['fingerprint'] = !recorded
    ? 'not-recorded'
    : recorded.sha256 === current.sha256 &&
        recorded.samples === current.samples &&
        recorded.sampleSize === current.sampleSize
      ? 'matched'
      : 'differs'
  if (!options.force && current.size !== expectedSize) {
    throw new EngineError(
      'BASE_CHANGED',
      `${base} is ${current.size} bytes, but the base of ${overlay} ${recorded ? 'was recorded at' : 'should be'} ${expectedSize} bytes; it is not the same base (pass --force to use it anyway).`,
      { path: base, field: 'virtual size', value: current.size },
    )
  }
  if (!options.force && fingerprint === 'differs') {
    throw new EngineError(
      'BASE_CHANGED',
      `The content of ${base} differs from the fingerprint recorded for the base of ${overlay} (sampled sha256 ${recorded!.sha256.slice(0, 12)}… → ${current.sha256.slice(0, 12)}…); it is not the same base, or it changed (pass --force to use it anyway).`,
      { path: base, field: 'base fingerprint', value: current.sha256 },
    )
  }
  const inside = relative(dirname(overlay), base)
  const isRelative = inside !== '' && !inside.startsWith('..' + sep) && !isAbsolute(inside)
  const stored = isRelative ? inside : base
  const result = await rebaseOverlay({
    overlay,
    backing: stored,
    backingFormat: format,
    unsafe: true,
    acceptBase: true,
    library: options.library,
    ...(options.policy ? { policy: options.policy } : {}),
  })
  await options.library.trust(result.trust, 'approved')
  await options.library.recordBaseFingerprint(current)
  return {
    overlay,
    base,
    format,
    stored,
    relative: isRelative,
    expectedSize,
    size: current.size,
    fingerprint,
  }
}
