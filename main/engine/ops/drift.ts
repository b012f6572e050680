import { stat } from 'node:fs/promises'
import { layerFiles, type Disk, type OperationOptions } from '../disk'
import { EngineError, throwIfAborted, wrapIoError } from '../errors'
import { realPath } from '../fs'
import type { BaseFingerprint, DriftStatus, Library } from '../library'

export type { DriftStatus } from '../library'

/** Bytes per sample of the base's guest view. */
export const FINGERPRINT_SAMPLE_SIZE = 64 * 1024
/** Samples spread evenly over the base, first and last cluster included. */
export const FINGERPRINT_SAMPLES = 64
/** Samples read at once (16 × 64 KiB: 1 MiB in flight). */
const FINGERPRINT_GROUP = 16

/** The result of comparing a base with its recorded fingerprint. */
export interface DriftReport {
  overlay: string
  status: DriftStatus
  /** The base's real path, when there is one. */
  base: string | null
  /** One phrase per difference, naming the old and the new value. */
  changes: string[]
  recorded: BaseFingerprint | null
  current: BaseFingerprint | null
}

/**
 * Fingerprint `base` (an open disk) for the overlay `overlay` (its real path): size, every
 * file's length and modification time, and a SHA-256 over {@link FINGERPRINT_SAMPLES} reads of
 * {@link FINGERPRINT_SAMPLE_SIZE} bytes of its guest view. Costs at most 4 MiB of reads.
 */
export async function fingerprintBase(
  overlay: string,
  base: Disk,
  options: OperationOptions = {},
): Promise<BaseFingerprint> {
  const files: BaseFingerprint['files'] = []
  for (const path of layerFiles(base)) {
    try {
      const info = await stat(path)
      files.push({ path: await realPath(path), length: info.size, mtimeMs: info.mtimeMs })
    } catch (error) {
      throw wrapIoError(error, path, 'fingerprint')
    }
  }
  const size = base.size
  const length = Math.min(FINGERPRINT_SAMPLE_SIZE, size)
  const samples =
    length === 0 ? 0 : Math.min(FINGERPRINT_SAMPLES, Math.ceil(size / FINGERPRINT_SAMPLE_SIZE))
  // node:crypto loads on use: most runs of the CLI never fingerprint a base.
  const { createHash } = await import('node:crypto')
  const hash = createHash('sha256')
  hash.update(`size ${size}\n`)
  // The samples are read a group at a time, all of a group at once (one wait on the disk for
  // the group, not one per sample), and hashed in order.
  const group = Math.min(FINGERPRINT_GROUP, samples)
  const buffer = Buffer.allocUnsafe(length * group)
  for (let first = 0; first < samples; first += group) {
    throwIfAborted(options.signal, 'fingerprint')
    const count = Math.min(group, samples - first)
    await Promise.all(
      Array.from({ length: count }, (_, step) => {
        const index = first + step
        const offset = samples === 1 ? 0 : Math.floor(((size - length) * index) / (samples - 1))
        return base.readInto(buffer.subarray(step * length, (step + 1) * length), offset)
      }),
    )
    hash.update(buffer.subarray(0, count * length))
  }
  return {
    version: 1,
    overlay,
    base: await realPath(base.path),
    format: base.format,
    size,
    files,
    sampleSize: length,
    samples,
    sha256: hash.digest('hex'),
    recordedAt: new Date().toISOString(),
  }
}

/** The differences between two fingerprints of a base, as phrases naming both values. */
export function fingerprintChanges(recorded: BaseFingerprint, current: BaseFingerprint): string[] {
  const changes: string[] = []
  if (recorded.base !== current.base)
    changes.push(`the overlay now uses ${current.base}, not ${recorded.base}`)
  if (recorded.format !== current.format)
    changes.push(`format ${recorded.format} → ${current.format}`)
  if (recorded.size !== current.size) changes.push(`size ${recorded.size} → ${current.size} bytes`)
  recorded.files.forEach((file, index) => {
    const now = current.files[index]
    if (!now || now.path !== file.path) return
    if (now.length !== file.length)
      changes.push(`${file.path} length ${file.length} → ${now.length}`)
    if (now.mtimeMs !== file.mtimeMs) {
      changes.push(
        `${file.path} modified ${new Date(file.mtimeMs).toISOString()} → ${new Date(now.mtimeMs).toISOString()}`,
      )
    }
  })
  if (
    recorded.sha256 !== current.sha256 &&
    recorded.samples === current.samples &&
    recorded.sampleSize === current.sampleSize
  ) {
    changes.push(
      `sampled content sha256 ${recorded.sha256.slice(0, 12)}… → ${current.sha256.slice(0, 12)}…`,
    )
  }
  return changes
}

/** The real path of an open image's file. */
export async function realPathOf(disk: Disk): Promise<string> {
  return realPath(disk.path)
}

/**
 * Compare the base of the open image `disk` with the fingerprint the library recorded for it.
 * Never throws for drift: the report says what changed (see {@link assertBaseUnchanged}).
 */
export async function checkBaseDrift(
  disk: Disk,
  library: Library,
  options: OperationOptions = {},
): Promise<DriftReport> {
  const overlay = await realPathOf(disk)
  const report = (status: DriftStatus, extra: Partial<DriftReport> = {}): DriftReport => ({
    overlay,
    status,
    base: null,
    changes: [],
    recorded: null,
    current: null,
    ...extra,
  })
  if (disk.isAllAllocated?.()) return report('not-consulted')
  if (!disk.backing) return report('no-backing')
  const current = await fingerprintBase(overlay, disk.backing, options)
  const recorded = await library.baseFingerprint(overlay)
  if (!recorded) return report('not-recorded', { base: current.base, current })
  const changes = fingerprintChanges(recorded, current)
  return report(changes.length > 0 ? 'changed' : 'unchanged', {
    base: current.base,
    changes,
    recorded,
    current,
  })
}

/** Throw BASE_CHANGED for a `changed` report unless `force`; other statuses pass. */
export function assertBaseUnchanged(
  report: DriftReport,
  options: { force?: boolean; doing?: string } = {},
): void {
  if (report.status !== 'changed' || options.force) return
  throw new EngineError(
    'BASE_CHANGED',
    `The base ${report.base} of ${report.overlay} changed since its fingerprint was recorded (${report.changes.join('; ')}), so the overlay's guest view may be corrupt; refusing to ${options.doing ?? 'go on'} (pass --accept-base if the change is intended).`,
    { path: report.overlay, field: 'base fingerprint', value: report.changes[0] },
  )
}

/** Record the current fingerprint of the base of the open image `disk` (no-op without one). */
export async function recordBaseFingerprint(
  disk: Disk,
  library: Library,
  options: OperationOptions = {},
): Promise<BaseFingerprint | null> {
  if (!disk.backing) return null
  const fingerprint = await fingerprintBase(await realPathOf(disk), disk.backing, options)
  await library.recordBaseFingerprint(fingerprint)
  return fingerprint
}

/** Options of {@link guardBaseDrift}. */
export interface BaseDriftGuardOptions extends OperationOptions {
  library: Library
  /**
   * Go on although the base changed, and record its current fingerprint so later runs accept
   * it (the CLI's --accept-base, the app's "go on with the base as it is now").
   */
  acceptBase: boolean
  /** What a changed base stops, for the refusal: "serve it", "run it". */
  doing: string
  /** Called when a base that changed is accepted, before its new fingerprint is recorded. */
  onAccepted?: (report: DriftReport) => void
}

/**
 * The drift guard every front end (CLI and app: serve, qemu-cmd, launch) runs on an opened
 * image before it serves or boots it: throw BASE_CHANGED when the base changed since its
 * fingerprint was recorded, unless `acceptBase`, which records the base's current
 * fingerprint (a base never recorded is recorded too).
 */
export async function guardBaseDrift(
  disk: Disk,
  options: BaseDriftGuardOptions,
): Promise<DriftReport> {
  const report = await checkBaseDrift(disk, options.library, options)
  assertBaseUnchanged(report, { force: options.acceptBase, doing: options.doing })
  if (
    options.acceptBase &&
    report.current &&
    (report.status === 'changed' || report.status === 'not-recorded')
  ) {
    if (report.status === 'changed') options.onAccepted?.(report)
    await options.library.recordBaseFingerprint(report.current)
  }
  return report
}
