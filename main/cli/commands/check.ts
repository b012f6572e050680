import {
  checkExitCode,
  checkImage,
  type CheckReport,
  type RepairLevel,
} from '../../engine/ops/check'
import { EngineError } from '../../engine/errors'
import { defineCommand } from '../command'
import {
  FORMAT_OPTION,
  JSON_OPTION,
  OUTPUT_USAGE,
  NAME_POLICY_OPTIONS,
  NAME_POLICY_USAGE,
  policyFrom,
} from '../options'
import { progressBar } from '../progress'

const LABEL: Record<string, string> = {
  corruption: 'ERROR',
  leak: 'Leaked',
  error: 'Could not check',
  warning: 'Warning',
}

/** The report as qemu-img check prints it, plus our own lines. */
export function describeCheck(report: CheckReport): string {
  const lines: string[] = []
  for (const problem of report.problems) {
    if (problem.repaired) continue
    lines.push(
      `${LABEL[problem.severity] ?? problem.severity} [${problem.code}]: ${problem.message}`,
    )
  }
  if (report.repairs.length > 0) {
    lines.push(
      'The following inconsistencies were found and repaired:',
      '',
      `    ${report['leaks-fixed']} leaked clusters`,
      `    ${report['corruptions-fixed']} corruptions`,
      '',
      ...report.repairs.map((repair) => `  - ${repair}`),
      '',
      'Double checking the fixed image now...',
    )
  }
  if (report['check-errors'] === 0 && report.corruptions === 0 && report.leaks === 0) {
    lines.push('No errors were found on the image.')
  }
  if (report.corruptions > 0) {
    lines.push(
      '',
      `${report.corruptions} errors were found on the image.`,
      'Data may be corrupted, or further writes to the image may corrupt it.',
    )
  }
  if (report.leaks > 0) {
    lines.push(
      '',
      `${report.leaks} leaked clusters were found on the image.`,
      'This means waste of disk space, but no harm to data.',
    )
  }
  if (report['check-errors'] > 0) {
    lines.push('', `${report['check-errors']} internal errors have occurred during the check.`)
  }
  const total = report['total-clusters']
  const allocated = report['allocated-clusters']
  if (total !== undefined && allocated !== undefined) {
    const percent = total === 0 ? 0 : (allocated / total) * 100
    lines.push(
      `${allocated}/${total} = ${percent.toFixed(2)}% allocated${report['all-allocated'] ? ' (ALL_ALLOCATED)' : ''}`,
    )
  }
  if (report['leak-scan'] === 'not-supported') {
    lines.push(`Leak scan not done: ${report['leak-scan-note'] ?? 'not supported here'}.`)
  }
  if (report['base-fingerprint'] !== 'not-checked')
    lines.push(`Base fingerprint: ${report['base-fingerprint']}`)
  if (report['image-end-offset'] !== undefined)
    lines.push(`Image end offset: ${report['image-end-offset']}`)
  return lines.join('\n') + '\n'
}

/** `addcow check`: the report of qemu-img check's shape, with exit codes 0/1/2/3/63; -r repairs. */
export const checkCommand = defineCommand({
  name: 'check',
  summary: 'check an add-cow image for damage, and repair what is safe',
  usage: `addcow check [--json] [-r leaks|all] [-f FMT] [-U] [--accept-base] IMAGE

  --json          the report as JSON (docs/operations.md gives its schema)
${OUTPUT_USAGE}
  -r leaks        repair leaks only: reclaim data left in unallocated clusters, cut an
                  add-cow file that is too long
  -r all          also repair corruptions that are safe to repair: header padding, a short
                  add-cow file, stray bits, ALL_ALLOCATED against the bitmap (never the base)
  -f FMT          format of IMAGE (default: probed)
  -U              do not lock the image (it may be in use; results can be stale)
  --accept-base   record the base's current fingerprint (after a change you intended)
${NAME_POLICY_USAGE}

Exit status, as qemu-img check: 0 clean (after -r: now consistent), 1 could not check,
2 corrupt, 3 leaks only, 63 the format has no check.`,
  options: {
    ...JSON_OPTION,
    r: { type: 'string', short: 'r' },
    ...FORMAT_OPTION,
    U: { type: 'boolean', short: 'U' },
    'accept-base': { type: 'boolean' },
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 1, max: 1, names: 'one IMAGE' },
  async run({ values, positionals }, context) {
    if (values.r !== undefined && values.r !== 'leaks' && values.r !== 'all') {
      throw new EngineError('BAD_ARGUMENT', `-r takes 'leaks' or 'all', not '${values.r}'.`, {
        field: '-r',
        value: values.r,
      })
    }
    const bar = progressBar(context.stderr, 'Checking', !values.json)
    const report = await checkImage(positionals[0]!, {
      ...(values.r ? { repair: values.r as RepairLevel } : {}),
      ...(values.f ? { format: values.f } : {}),
      policy: await policyFrom(context, values),
      library: context.library,
      acceptBase: values['accept-base'] ?? false,
      forceShare: values.U ?? false,
      signal: context.signal,
      onProgress: bar.update,
    })
    bar.finish()
    if (report.unsupported) {
      if (values.json) context.stdout.write(JSON.stringify(report, null, 4) + '\n')
      else
        context.stderr.write(
          `addcow check: ${report.filename} is a ${report.format} image; this format does not support checks.\n`,
        )
      return checkExitCode(report)
    }
    context.stdout.write(
      values.json ? JSON.stringify(report, null, 4) + '\n' : describeCheck(report),
    )
    return checkExitCode(report)
  },
})
