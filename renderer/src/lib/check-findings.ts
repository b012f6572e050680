import type { z } from 'zod'
import type { CheckProblemSchema, CheckReportSchema } from '../../../shared/ipc/contract'
import { formatBytes } from '../composables/use-format'

/** One finding of a check (engine/ops/check.ts, CheckProblem). */
export type CheckProblem = z.output<typeof CheckProblemSchema>
/** A check report (`addcow check --json`). */
export type CheckReport = z.output<typeof CheckReportSchema>
/** A finding's severity. */
export type CheckSeverity = CheckProblem['severity']
/** The level `check -r` repairs at. */
export type RepairLevel = 'leaks' | 'all'

/** Worst first. */
export const SEVERITY_ORDER: readonly CheckSeverity[] = ['corruption', 'error', 'leak', 'warning']

/** How each severity is named and coloured, and what it means for the user. */
export const SEVERITY_LOOK: Record<
  CheckSeverity,
  { label: string; plural: string; tag: 'error' | 'warning' | 'info' | 'default'; meaning: string }
> = {
  corruption: {
    label: 'Corruption',
    plural: 'Corruptions',
    tag: 'error',
    meaning: 'Data may be wrong, or a reader may refuse the file.',
  },
  error: {
    label: 'Could not check',
    plural: 'Could not check',
    tag: 'error',
    meaning: 'Check could not look at this part of the image.',
  },
  leak: {
    label: 'Leak',
    plural: 'Leaks',
    tag: 'warning',
    meaning: 'Space is wasted on disk; the data the guest sees is not harmed.',
  },
  warning: {
    label: 'Warning',
    plural: 'Warnings',
    tag: 'info',
    meaning: 'Worth knowing; harmless.',
  },
}

/** Findings of one severity. */
export interface FindingGroup {
  severity: CheckSeverity
  label: string
  meaning: string
  problems: CheckProblem[]
}

/**
 * The open findings grouped by severity, worst first; empty groups are left out. Findings a
 * repair already fixed are not "open": they appear in the repair's result instead.
 */
export function groupFindings(problems: readonly CheckProblem[]): FindingGroup[] {
  return SEVERITY_ORDER.map((severity) => ({
    severity,
    label: SEVERITY_LOOK[severity].plural,
    meaning: SEVERITY_LOOK[severity].meaning,
    problems: problems.filter((problem) => problem.severity === severity && !problem.repaired),
  })).filter((group) => group.problems.length > 0)
}

/** A finding's code for people: `stray-bits` → `Stray bits`. */
export function findingTitle(code: string): string {
  const text = code.replace(/-/g, ' ')
  return text.charAt(0).toUpperCase() + text.slice(1)
}

/** Bytes as people read them, with the exact count when it is not a round number. */
function bytesText(bytes: number): string {
  const human = formatBytes(bytes)
  return human === `${bytes} B` ? human : `${human} (${bytes.toLocaleString('en-US')} bytes)`
}

/** The value at fault, and what it should be, as one short text. */
export function findingValue(problem: CheckProblem): string {
  if (problem.value === undefined) return '—'
  const isBytes = problem.code === 'leaked-clusters' && typeof problem.value === 'number'
  const value = isBytes ? bytesText(problem.value as number) : String(problem.value)
  return problem.expected === undefined ? value : `${value} (expected ${problem.expected})`
}

/** Where in the file: `offset 65,568 (0x10020)`. */
export function findingOffset(problem: CheckProblem): string {
  if (problem.offset === undefined) return '—'
  return `${problem.offset.toLocaleString('en-US')} (0x${problem.offset.toString(16)})`
}

/** What `check -r` does about each repairable finding (docs/operations.md, "check"). */
const REPAIR_ACTIONS: Record<string, (problem: CheckProblem) => string> = {
  'header-padding': (problem) =>
    `Zero ${problem.count === undefined ? 'the non-zero bytes' : count(problem.count, 'non-zero byte')} of ${problem.field ?? 'the header'} in the add-cow file.`,
  'metadata-file-too-short': () =>
    'Extend the add-cow file to its full length; the missing bits read as 0 (those clusters come from the base).',
  'metadata-file-too-long': () => 'Cut the add-cow file to the length its header and bitmap need.',
  'stray-bits': () =>
    'Clear the bits set past the last cluster in the bitmap; the guest view does not change.',
  'image-file-too-short': () =>
    'Clear the bits of clusters that lie past the end of the image file.',
  'all-allocated-inconsistent': () =>
    'Set every bit of the bitmap, to agree with ALL_ALLOCATED; the guest view does not change.',
  'all-allocated-missing': () =>
    'Set ALL_ALLOCATED: every cluster is already in the image file, so the base is no longer read.',
  'leaked-clusters': (problem) =>
    `Punch holes over ${problem.value === undefined ? 'the' : formatBytes(Number(problem.value))} of leaked data in ${problem.count === undefined ? 'the clusters' : count(problem.count, 'cluster')} of the image file; the guest view does not change.`,
}

/** What a repair at one level will change, and what it leaves. */
export interface RepairPreview {
  level: RepairLevel
  /** Each finding the repair fixes, with what it will do. */
  changes: { problem: CheckProblem; action: string }[]
  /** Open findings this level does not repair (another level might). */
  remaining: CheckProblem[]
}

/** Whether a repair at `level` fixes `problem` (`all` includes the leak repairs). */
export function repairs(level: RepairLevel, problem: CheckProblem): boolean {
  if (problem.repaired || problem.repair === null) return false
  return level === 'all' || problem.repair === 'leaks'
}

/** Preview a repair: what each level would change, from the report alone (nothing is written). */
export function previewRepair(report: CheckReport, level: RepairLevel): RepairPreview {
  const open = report.problems.filter((problem) => !problem.repaired)
  return {
    level,
    changes: open
      .filter((problem) => repairs(level, problem))
      .map((problem) => ({
        problem,
        action:
          REPAIR_ACTIONS[problem.code]?.(problem) ??
          `Repair ${findingTitle(problem.code).toLowerCase()}.`,
      })),
    remaining: open.filter((problem) => !repairs(level, problem)),
  }
}

/** The levels worth offering: `leaks` only when it differs from `all`, none when nothing repairs. */
export function repairLevels(report: CheckReport): RepairLevel[] {
  const all = previewRepair(report, 'all').changes.length
  if (all === 0) return []
  const leaks = previewRepair(report, 'leaks').changes.length
  return leaks > 0 && leaks < all ? ['leaks', 'all'] : ['all']
}

/** The overall verdict of a report. */
export type CheckVerdict = 'clean' | 'warnings' | 'leaks' | 'corrupt' | 'incomplete' | 'unsupported'

/** `1 corruption`, `2 corruptions`. */
export function count(amount: number, word: string, plural = `${word}s`): string {
  return `${amount.toLocaleString('en-US')} ${amount === 1 ? word : plural}`
}

/** The verdict and one sentence about it; `name` is how the image is called (default: its path). */
export function checkVerdict(
  report: CheckReport,
  name: string = report.filename,
): { verdict: CheckVerdict; sentence: string } {
  if (report.unsupported)
    return {
      verdict: 'unsupported',
      sentence: `${name} is a ${report.format} image; check looks at add-cow overlays only.`,
    }
  if (report['check-errors'] > 0)
    return {
      verdict: 'incomplete',
      sentence: `Check could not look at every part of ${name}: ${count(report['check-errors'], 'problem')} stopped it.`,
    }
  if (report.corruptions > 0)
    return {
      verdict: 'corrupt',
      sentence: `${name} has ${count(report.corruptions, 'corruption')}${report.leaks > 0 ? ` and ${count(report.leaks, 'leaked cluster')}` : ''}.`,
    }
  if (report.leaks > 0)
    return {
      verdict: 'leaks',
      sentence: `${name} wastes space: ${count(report.leaks, 'leaked cluster')}, ${formatBytes(report['leaked-bytes'])}. The guest's data is not harmed.`,
    }
  const warnings = report.problems.filter(
    (problem) => problem.severity === 'warning' && !problem.repaired,
  ).length
  if (warnings > 0)
    return {
      verdict: 'warnings',
      sentence: `${name} has no damage; ${count(warnings, 'warning')} worth a look.`,
    }
  return { verdict: 'clean', sentence: `No problems found in ${name}.` }
}

/** What the base fingerprint status means, in a sentence. */
export const BASE_FINGERPRINT_TEXT: Record<CheckReport['base-fingerprint'], string> = {
  unchanged: 'The base is unchanged since the overlay was made.',
  changed: 'The base changed since the overlay was made.',
  'not-recorded': 'No fingerprint of the base was recorded here, so a change cannot be seen.',
  'no-backing': 'The image has no base.',
  'not-consulted': 'The overlay never reads its base (it is flattened).',
  'not-checked': 'The base was not checked.',
}

/** What the leak scan status means, in a sentence. */
export function leakScanText(report: CheckReport): string {
  if (report['leak-scan'] === 'done') return 'The image file was scanned for leaked data.'
  if (report['leak-scan'] === 'not-supported')
    return `The image file could not be scanned for leaked data${report['leak-scan-note'] ? ` (${report['leak-scan-note']})` : ''}.`
  return 'The image file was not scanned for leaked data (not needed).'
}
