import type { OperationOptions } from './disk'
import type { DriftStatus } from './library'
import type { NamePolicy } from './names'

/**
 * How bad a finding is, as qemu-img check counts them: `corruption` (data may be wrong or a
 * reader may refuse the file), `leak` (space wasted, no harm to data), `error` (the check could
 * not look at something), `warning` (worth knowing, harmless; does not change the exit code).
 */
export type CheckSeverity = 'corruption' | 'leak' | 'error' | 'warning'

/** The `-r` level that repairs a finding: `leaks` repairs leaks only, `all` everything it can. */
export type RepairLevel = 'leaks' | 'all'

/** One finding, with the offending value. Codes are stable (docs/operations.md lists them). */
export interface CheckProblem {
  code: string
  severity: CheckSeverity
  /** One sentence naming the file, the field and the value. */
  message: string
  field?: string
  /** Byte offset in the file the finding is about. */
  offset?: number
  value?: string | number
  expected?: string | number
  /** How many units (clusters, bytes, bits) the finding covers. */
  count?: number
  /** The -r level that repairs it; null when check does not repair it. */
  repair: RepairLevel | null
  repaired: boolean
}

/**
 * The report of `addcow check --json`. Keys follow qemu-img's ImageCheck where it has them
 * (`check-errors`, `corruptions`, `leaks`, `corruptions-fixed`, `leaks-fixed`,
 * `total-clusters`, `allocated-clusters`, `image-end-offset`); the rest is documented in
 * docs/operations.md.
 */
export interface CheckReport {
  filename: string
  format: string
  /** The format has no consistency check here (qemu-img check's exit 63). */
  unsupported?: boolean
  'check-errors': number
  corruptions: number
  /** Leaked clusters found by the scan, plus one per other leak finding. */
  leaks: number
  'corruptions-fixed': number
  'leaks-fixed': number
  'total-clusters'?: number
  'allocated-clusters'?: number
  /** Length of the add-cow file. */
  'image-end-offset'?: number
  'virtual-size'?: number
  'all-allocated'?: boolean
  'leaked-bytes': number
  /** The crash-consistency scan of the image file: done, impossible here, or not needed. */
  'leak-scan': 'done' | 'not-supported' | 'skipped'
  'leak-scan-note'?: string
  'base-fingerprint': DriftStatus | 'not-checked'
  problems: CheckProblem[]
  /** What -r changed, one sentence each. */
  repairs: string[]
}

/** What a format's check ({@link FormatDriver.check}) gets from the check operation. */
export interface CheckContext extends OperationOptions {
  /** Repair what is safe at this level (never the base). */
  repair?: RepairLevel
  /** Policy for the names the file stores (its data file). */
  policy: NamePolicy
  /**
   * Lock these files of the image for the check (shared) or the repair (exclusive), by the job
   * mechanism's rule; a no-op under --force-share. The check locks each file before it reads it.
   */
  lock(files: string[]): Promise<void>
}

/** What a format's check found in the image's own files (the operation adds the chain). */
export interface FormatCheck {
  problems: CheckProblem[]
  /** What -r changed, one sentence each. */
  repairs: string[]
  /** The report's counters the format knows (clusters, sizes, the leak scan). */
  counts: Pick<
    CheckReport,
    | 'total-clusters'
    | 'allocated-clusters'
    | 'image-end-offset'
    | 'virtual-size'
    | 'all-allocated'
    | 'leak-scan-note'
  > &
    Pick<CheckReport, 'leaked-bytes' | 'leak-scan'>
  /** Whether the image reads a backing file, whose chain the operation then checks. */
  readsBacking: boolean
}

/** qemu-img check's exit code for a report: 0 clean, 1 could not check, 2 corrupt, 3 leaks, 63 unsupported. */
export function checkExitCode(report: CheckReport): number {
  if (report.unsupported) return 63
  if (report['check-errors'] > 0) return 1
  if (report.corruptions > 0) return 2
  if (report.leaks > 0) return 3
  return 0
}
