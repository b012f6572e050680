import { resolve } from 'node:path'
import type { CheckProblem, CheckReport, CheckSeverity, RepairLevel } from '../check-report'
import type { OperationOptions } from '../disk'
import { isEngineError } from '../errors'
import { realPath } from '../fs'
import { buildGraph, loopBelow } from '../graph'
import type { Library } from '../library'
import { STRICT_POLICY, type NamePolicy } from '../names'
import { openImage, probeFormat } from '../open'
import { findDriver } from '../registry'
import { checkBaseDrift } from './drift'
import { fileLocks, runJob } from './job'

export {
  checkExitCode,
  type CheckProblem,
  type CheckReport,
  type CheckSeverity,
  type RepairLevel,
} from '../check-report'

/** What `checkImage` needs. */
export interface CheckOptions extends OperationOptions {
  /** Repair what is safe at this level (-r leaks | -r all). */
  repair?: RepairLevel
  /** The image's format (default: probed). */
  format?: string
  policy?: NamePolicy
  /** For the base drift check; without it drift is 'not-checked'. */
  library?: Library
  /** Record the base's current fingerprint when it changed or none was recorded. */
  acceptBase?: boolean
  /** Check without taking locks (qemu-img check -U); results on an image in use may be stale. */
  forceShare?: boolean
}

/** The findings of the chain check, and the base's drift status. */
interface ChainFindings {
  problems: CheckProblem[]
  drift: CheckReport['base-fingerprint']
}

/** Check the chain below the overlay: reachable, no loops, formats, and the base's drift. */
async function checkChain(
  path: string,
  checker: ChainFindings,
  options: CheckOptions,
): Promise<void> {
  let disk
  try {
    disk = await openImage(path, {
      format: 'add-cow',
      readOnly: true,
      ...(options.policy ? { policy: options.policy } : {}),
    })
  } catch (error) {
    if (!isEngineError(error)) throw error
    const top = error.path === path
    const severity: CheckSeverity = [
      'MISSING_FILE',
      'UNTRUSTED_NAME',
      'REFUSED_NAME',
      'PERMISSION_DENIED',
      'IO_ERROR',
      'BUSY',
    ].includes(error.code)
      ? 'error'
      : 'corruption'
    if (top && (error.code === 'CORRUPT_IMAGE' || error.code === 'CORRUPT_HEADER')) return
    const code =
      error.code === 'CHAIN_LOOP'
        ? 'chain-loop'
        : error.code === 'CHAIN_TOO_DEEP'
          ? 'chain-too-deep'
          : error.code === 'SAME_FILE'
            ? 'same-file'
            : error.code === 'FORMAT_MISMATCH'
              ? 'backing-format-mismatch'
              : severity === 'error'
                ? 'backing-unreachable'
                : 'backing-corrupt'
    checker.problems.push({
      repair: null,
      code,
      severity,
      field: error.field ?? 'backing file',
      value: String(error.value ?? error.path ?? ''),
      message: error.message,
      repaired: false,
    })
    return
  }
  try {
    if (!options.library) return
    const report = await checkBaseDrift(disk, options.library, options)
    checker.drift = report.status
    if (report.status === 'changed') {
      const accepted = options.acceptBase === true
      checker.problems.push({
        code: 'base-changed',
        severity: 'corruption',
        field: 'base fingerprint',
        value: report.changes[0] ?? '',
        repair: null,
        repaired: accepted,
        message: `The base ${report.base} of ${path} changed since its fingerprint was recorded (${report.changes.join('; ')}); the overlay's guest view may be corrupt.`,
      })
    }
    if (
      options.acceptBase &&
      report.current &&
      (report.status === 'changed' || report.status === 'not-recorded')
    ) {
      await options.library.recordBaseFingerprint(report.current)
    }
  } finally {
    await disk.close()
  }
}

/**
 * Find a loop in the stored names below the image, as the dependency graph follows them: also
 * through flattened layers, which never open their base (so opening the chain cannot see it),
 * and also when the image itself is flattened. A loop is corruption: the chain never ends.
 */
async function checkNameLoop(
  path: string,
  checker: ChainFindings,
  options: CheckOptions,
): Promise<void> {
  const real = await realPath(path)
  const graph = await buildGraph({
    library: null,
    extra: [real],
    chainsOnly: true,
    namesOnly: true,
    policy: options.policy ?? STRICT_POLICY,
    ...(options.signal ? { signal: options.signal } : {}),
  })
  const loop = loopBelow(graph, real)
  if (!loop) return
  const cycle = [...loop, loop[0]!].join(' → ')
  // The open may have hit the same loop (when no layer of it is flattened): report it once,
  // with the whole cycle.
  checker.problems = checker.problems.filter((problem) => problem.code !== 'chain-loop')
  checker.problems.push({
    repair: null,
    code: 'chain-loop',
    severity: 'corruption',
    field: 'backing name',
    value: cycle,
    message: `The backing chain of ${real} loops: ${cycle} (each names the next as its base; a flattened layer does not read its base, but still names it). Point one of them at another base with rebase.`,
    repaired: false,
  })
}

function weight(problem: CheckProblem): number {
  return problem.code === 'leaked-clusters' ? (problem.count ?? 1) : 1
}

/**
 * `check`: look at every part of an image that can be wrong, and report each problem with the
 * offending value. The format's own check ({@link FormatDriver.check}: for add-cow the header,
 * names, bounds, file lengths, stray bits, ALL_ALLOCATED and the leak scan) looks at the
 * image's files; this operation adds the chain (reachable, no loop, formats) and the base's
 * drift, under the job mechanism's locks (shared to check, exclusive to repair; none with
 * `forceShare`). A format without a check is reported as unsupported (exit 63).
 *
 * With `repair` the format fixes what is safe at that level (never the base), then the image is
 * checked again; the report counts what remains and what was fixed, as qemu-img check -r does.
 */
export async function checkImage(path: string, options: CheckOptions = {}): Promise<CheckReport> {
  const absolute = resolve(path)
  const format = options.format ?? (await probeFormat(absolute))
  const base: CheckReport = {
    filename: absolute,
    format,
    'check-errors': 0,
    corruptions: 0,
    leaks: 0,
    'corruptions-fixed': 0,
    'leaks-fixed': 0,
    'leaked-bytes': 0,
    'leak-scan': 'skipped',
    'base-fingerprint': 'not-checked',
    problems: [],
    repairs: [],
  }
  const driver = await findDriver(format)
  if (!driver?.check) return { ...base, unsupported: true }
  const check = driver.check.bind(driver)
  const writable = options.repair !== undefined
  const chain: ChainFindings = { problems: [], drift: 'not-checked' }
  const found = await runJob(
    writable ? 'repair' : 'check',
    { ...options, doing: writable ? 'repair it' : 'check it' },
    async (job) => {
      const result = await check(absolute, {
        ...(options.repair ? { repair: options.repair } : {}),
        policy: options.policy ?? STRICT_POLICY,
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.onProgress ? { onProgress: options.onProgress } : {}),
        lock: async (files) => {
          if (!options.forceShare)
            await job.lock(await fileLocks(files, writable ? 'exclusive' : 'shared'))
        },
      })
      if (result.readsBacking) await checkChain(absolute, chain, options)
      await checkNameLoop(absolute, chain, options)
      return result
    },
  )
  const problems = [...found.problems, ...chain.problems]
  const fixed = (severity: CheckSeverity): number =>
    problems
      .filter((problem) => problem.severity === severity && problem.repaired)
      .reduce((sum, problem) => sum + weight(problem), 0)
  const open = (severity: CheckSeverity): number =>
    problems
      .filter((problem) => problem.severity === severity && !problem.repaired)
      .reduce((sum, problem) => sum + weight(problem), 0)
  let report: CheckReport = {
    ...base,
    'check-errors': open('error'),
    corruptions: open('corruption'),
    leaks: open('leak'),
    'corruptions-fixed': fixed('corruption'),
    'leaks-fixed': fixed('leak'),
    'leaked-bytes': found.counts['leaked-bytes'],
    'leak-scan': found.counts['leak-scan'],
    'base-fingerprint': chain.drift,
    problems,
    repairs: found.repairs,
  }
  const { counts } = found
  if (counts['total-clusters'] !== undefined) {
    report['total-clusters'] = counts['total-clusters']
    report['allocated-clusters'] = counts['allocated-clusters'] ?? 0
    report['virtual-size'] = counts['virtual-size'] ?? 0
  }
  if (counts['all-allocated'] !== undefined) report['all-allocated'] = counts['all-allocated']
  if (counts['image-end-offset'] !== undefined)
    report['image-end-offset'] = counts['image-end-offset']
  if (counts['leak-scan-note']) report['leak-scan-note'] = counts['leak-scan-note']
  if (options.repair && found.repairs.length > 0) {
    // Check again, as qemu-img check -r does: the counts describe the image after the repair.
    const { repair: _repair, acceptBase: _accept, ...rest } = options
    const again = await checkImage(absolute, rest)
    report = {
      ...again,
      'corruptions-fixed': report['corruptions-fixed'],
      'leaks-fixed': report['leaks-fixed'],
      problems: [...problems.filter((problem) => problem.repaired), ...again.problems],
      repairs: found.repairs,
    }
  }
  return report
}
