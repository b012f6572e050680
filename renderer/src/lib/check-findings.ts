import type { z } from 'zod'
import type { CheckProblemSchema, CheckReportSchema } from '../../../shared/ipc/contract'
import { formatBytes, formatCount } from '../composables/use-format'
import { plainWords } from './errors'

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

/**
 * Findings about the base rather than the overlay's own files. The engine counts a changed base
 * among the corruptions (the CLI's exit code says "do not trust this view"), but nothing in the
 * overlay is damaged: the app shows it on its own, with what to do.
 */
export const BASE_FINDINGS: ReadonlySet<string> = new Set(['base-changed'])

/** Findings of one severity (or `base`: the base changed). */
export interface FindingGroup {
  severity: CheckSeverity | 'base'
  label: string
  meaning: string
  problems: CheckProblem[]
}

/**
 * The open findings grouped by severity, worst first, with a changed base in a group of its
 * own; empty groups are left out. Findings a repair already fixed are not "open": they appear
 * in the repair's result instead.
 */
export function groupFindings(problems: readonly CheckProblem[]): FindingGroup[] {
  const open = problems.filter((problem) => !problem.repaired)
  const groups: FindingGroup[] = [
    {
      severity: 'base',
      label: 'The base changed',
      meaning:
        "The base is not as it was when the overlay was made. The overlay's own files are not damaged; what the guest sees depends on whether the change was intended.",
      problems: open.filter((problem) => BASE_FINDINGS.has(problem.code)),
    },
    ...SEVERITY_ORDER.map((severity) => ({
      severity,
      label: SEVERITY_LOOK[severity].plural,
      meaning: SEVERITY_LOOK[severity].meaning,
      problems: open.filter(
        (problem) => problem.severity === severity && !BASE_FINDINGS.has(problem.code),
      ),
    })),
  ]
  return groups.filter((group) => group.problems.length > 0)
}

const DATE_FORMAT = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' })

/**
 * The engine's words for a changed base in people's words: local dates instead of ISO time
 * stamps, "its content differs" instead of hashes, sizes in bytes with grouping.
 */
export function plainBaseChange(text: string): string {
  return text
    .replace(/\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z/g, (iso) =>
      DATE_FORMAT.format(new Date(iso)),
    )
    .replace(/sampled content sha256 [0-9a-f]+… → [0-9a-f]+…/g, 'its content differs')
    .replace(
      /size (\d+) → (\d+) bytes/g,
      (_, from: string, to: string) =>
        `size ${formatBytes(Number(from))} → ${formatBytes(Number(to))}`,
    )
    .replace(
      / length (\d+) → (\d+)/g,
      (_, from: string, to: string) =>
        ` length ${formatBytes(Number(from))} → ${formatBytes(Number(to))}`,
    )
    .replace(/ modified /g, ' last modified ')
    .replace(/ since its fingerprint was recorded/g, ' since the overlay was made')
    .replace(
      /; the overlay's guest view may be corrupt\./g,
      '. If the change was not intended, the overlay may no longer read as it should.',
    )
}

/** What a finding means, in the app's words where the engine's are jargon or alarm. */
export function findingMessage(problem: CheckProblem): string {
  if (problem.code === 'image-file-too-short') {
    const disk = typeof problem.value === 'number' ? formatBytes(problem.value) : 'the disk'
    return `The bitmap marks clusters past the end of the disk (${disk}) as written. The guest never sees past its disk's end, so nothing it can read is affected; the repair clears those bits.`
  }
  if (problem.code === 'stray-bits') {
    const which = /bits for clusters .+? past the last cluster \d+ are set/.exec(problem.message)
    return `The bitmap marks clusters past the end of the disk as written${which ? `: ${which[0]}` : ''}. The guest never reads there; the repair clears those bits.`
  }
  if (BASE_FINDINGS.has(problem.code)) return plainWords(plainBaseChange(problem.message))
  return repairLine(problem.message)
}

/**
 * A line of what check found or a repair did, in the app's words: byte counts with the
 * locale's grouping ("65,536 leaked bytes"), "base" for "backing file".
 */
export function repairLine(line: string): string {
  const group = (digits: string): string => formatCount(Number(digits))
  return plainWords(
    line
      .replace(
        /\bfrom (\d{4,}) to (\d{4,}) bytes\b/g,
        (_, from: string, to: string) => `from ${group(from)} to ${group(to)} bytes`,
      )
      .replace(
        /\b(\d{4,})((?: leaked)? bytes)\b/g,
        (_, digits: string, rest: string) => `${group(digits)}${rest}`,
      ),
  )
}

/** The field at fault, in the app's words ("base", not "backing file"). */
export function findingField(problem: CheckProblem): string {
  return problem.field === undefined ? '—' : plainWords(problem.field)
}

/** A finding's code for people: `stray-bits` → `Stray bits`, `backing-…` → `Base …`. */
export function findingTitle(code: string): string {
  const text = code.replace(/^backing-/, 'base-').replace(/-/g, ' ')
  return text.charAt(0).toUpperCase() + text.slice(1)
}

/** Bytes as people read them, with the exact count when it is not a round number. */
function bytesText(bytes: number): string {
  const human = formatBytes(bytes)
  return human === `${bytes} B` ? human : `${human} (${formatCount(bytes)} bytes)`
}

/** Findings whose value (and expected value) count bytes. */
const BYTE_VALUES: ReadonlySet<string> = new Set([
  'leaked-clusters',
  'image-file-too-short',
  'metadata-file-too-short',
  'metadata-file-too-long',
])

function valueText(problem: CheckProblem, value: string | number): string {
  if (typeof value === 'string')
    return BASE_FINDINGS.has(problem.code) ? plainBaseChange(value) : value
  return BYTE_VALUES.has(problem.code) ? bytesText(value) : formatCount(value)
}

/** The value at fault, and what it should be, as one short text. */
export function findingValue(problem: CheckProblem): string {
  if (problem.value === undefined) return '—'
  const value = valueText(problem, problem.value)
  return problem.expected === undefined
    ? value
    : `${value} (expected ${valueText(problem, problem.expected)})`
}

/** Where in the file: `offset 65,568 (0x10020)`. */
export function findingOffset(problem: CheckProblem): string {
  if (problem.offset === undefined) return '—'
  return `${formatCount(problem.offset)} (0x${problem.offset.toString(16)})`
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
    'Clear the bits of clusters past the end of the disk; the guest view does not change.',
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
export type CheckVerdict =
  'clean' | 'warnings' | 'base-changed' | 'leaks' | 'corrupt' | 'incomplete' | 'unsupported'

/** `1 corruption`, `2 corruptions`. */
export function count(amount: number, word: string, plural = `${word}s`): string {
  return `${formatCount(amount)} ${amount === 1 ? word : plural}`
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
  const baseChanges = report.problems.filter(
    (problem) => BASE_FINDINGS.has(problem.code) && problem.severity === 'corruption',
  ).length
  const corruptions = Math.max(0, report.corruptions - baseChanges)
  if (corruptions > 0)
    return {
      verdict: 'corrupt',
      sentence: `${name} has ${count(corruptions, 'corruption')}${report.leaks > 0 ? ` and ${count(report.leaks, 'leaked cluster')}` : ''}.`,
    }
  if (report.problems.some((problem) => BASE_FINDINGS.has(problem.code) && !problem.repaired))
    return {
      verdict: 'base-changed',
      sentence: `The base of ${name} changed since the overlay was made; the overlay's own files are not damaged.`,
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
