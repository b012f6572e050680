import { describe, expect, it } from 'vitest'
import {
  checkVerdict,
  findingMessage,
  findingOffset,
  findingTitle,
  findingValue,
  groupFindings,
  repairLine,
  previewRepair,
  repairLevels,
  type CheckProblem,
  type CheckReport,
} from '../../../../renderer/src/lib/check-findings'

// The check screen's reading of a report: findings by severity, the values at fault, and the
// preview of what each repair level changes (docs/operations.md, "check").

function problem(
  fields: Partial<CheckProblem> & Pick<CheckProblem, 'code' | 'severity'>,
): CheckProblem {
  return { message: `${fields.code} in /x.add-cow`, repair: null, repaired: false, ...fields }
}

const STRAY = problem({
  code: 'stray-bits',
  severity: 'corruption',
  field: 'bitmap',
  offset: 65568,
  value: '0x80',
  count: 1,
  repair: 'all',
})
const LEAK = problem({
  code: 'leaked-clusters',
  severity: 'leak',
  field: 'image file',
  value: 131072,
  count: 2,
  repair: 'leaks',
})
const NAME = problem({
  code: 'backing-unreachable',
  severity: 'error',
  field: 'backing file',
  value: '/gone.raw',
})
const FLAG = problem({ code: 'all-allocated-missing', severity: 'warning', repair: 'all' })
const BITS = problem({
  code: 'cluster-bits',
  severity: 'corruption',
  field: 'cluster_bits',
  value: 25,
  expected: '12..21',
  offset: 20,
})

function report(problems: CheckProblem[], counts: Partial<CheckReport> = {}): CheckReport {
  return {
    filename: '/x.add-cow',
    format: 'add-cow',
    'check-errors': 0,
    corruptions: 0,
    leaks: 0,
    'corruptions-fixed': 0,
    'leaks-fixed': 0,
    'leaked-bytes': 0,
    'leak-scan': 'done',
    'base-fingerprint': 'unchanged',
    problems,
    repairs: [],
    ...counts,
  }
}

describe('groupFindings', () => {
  it('groups open findings worst first and leaves out empty groups and repaired findings', () => {
    const groups = groupFindings([FLAG, LEAK, STRAY, NAME, { ...BITS, repaired: true }])
    expect(groups.map((group) => [group.severity, group.label, group.problems.length])).toEqual([
      ['corruption', 'Corruptions', 1],
      ['error', 'Could not check', 1],
      ['leak', 'Leaks', 1],
      ['warning', 'Warnings', 1],
    ])
    expect(groupFindings([])).toEqual([])
  })
})

describe('a changed base and bits past the end, in plain words', () => {
  const CHANGED = problem({
    code: 'base-changed',
    severity: 'corruption',
    field: 'base fingerprint',
    value: '/b.raw modified 2026-12-01T10:00:00.000Z → 2026-12-05T09:30:00.000Z',
    message:
      "The base /b.raw of /x.add-cow changed since its fingerprint was recorded (size 67108864 → 104923136 bytes; sampled content sha256 0123456789ab… → ba9876543210…); the overlay's guest view may be corrupt.",
  })
  const BEYOND = problem({
    code: 'image-file-too-short',
    severity: 'corruption',
    field: 'bitmap',
    value: 67108864,
    expected: 104923136,
    repair: 'all',
    message: 'Bits … data written past its end is lost.',
  })

  it('files a changed base apart from the corruptions, and the verdict says the files are sound', () => {
    const groups = groupFindings([CHANGED, STRAY])
    expect(groups.map((group) => [group.severity, group.problems.map((p) => p.code)])).toEqual([
      ['base', ['base-changed']],
      ['corruption', ['stray-bits']],
    ])
    const only = checkVerdict(report([CHANGED], { corruptions: 1 }))
    expect(only.verdict).toBe('base-changed')
    expect(checkVerdict(report([CHANGED, STRAY], { corruptions: 2 })).sentence).toBe(
      '/x.add-cow has 1 corruption.',
    )
  })

  it('shows local dates, sizes and no hashes for a changed base', () => {
    const text = findingMessage(CHANGED)
    expect(text).not.toMatch(/\d{4}-\d{2}-\d{2}T|sha256|[0-9a-f]{12}|67108864/)
    expect(text).toContain('64 MiB → 100 MiB')
    expect(text).toContain('its content differs')
    expect(findingValue(CHANGED)).toContain(
      new Date('2026-12-05T09:30:00.000Z').toLocaleString(undefined, {
        dateStyle: 'medium',
        timeStyle: 'short',
      }),
    )
  })

  it('groups the digits of byte counts in what a repair did', () => {
    expect(repairLine('Punched holes over 65536 leaked bytes in 1 cluster(s) of /x.raw.')).toBe(
      `Punched holes over ${(65536).toLocaleString()} leaked bytes in 1 cluster(s) of /x.raw.`,
    )
    expect(repairLine('Extended /x.add-cow from 65536 to 65664 bytes.')).toBe(
      `Extended /x.add-cow from ${(65536).toLocaleString()} to ${(65664).toLocaleString()} bytes.`,
    )
  })

  it('says what the repair of bits past the end does instead of announcing lost data', () => {
    expect(findingMessage(BEYOND)).toContain('the repair clears those bits')
    expect(findingMessage(BEYOND)).not.toContain('lost')
    expect(findingValue(BEYOND)).toBe(
      `64 MiB (${(67108864).toLocaleString()} bytes) (expected 100 MiB (${(104923136).toLocaleString()} bytes))`,
    )
  })
})

describe('the values at fault', () => {
  it('shows the value, what it should be, the offset in decimal and hex, and leaks in bytes', () => {
    expect(findingValue(STRAY)).toBe('0x80')
    expect(findingValue(BITS)).toBe('25 (expected 12..21)')
    expect(findingValue(LEAK)).toBe('128 KiB (131,072 bytes)')
    expect(findingValue(FLAG)).toBe('—')
    expect(findingOffset(STRAY)).toBe('65,568 (0x10020)')
    expect(findingOffset(LEAK)).toBe('—')
    expect(findingTitle('all-allocated-missing')).toBe('All allocated missing')
  })
})

describe('previewRepair', () => {
  const damaged = report([STRAY, LEAK, NAME, FLAG], { corruptions: 1, leaks: 2 })

  it('lists what each level changes and what it leaves', () => {
    const leaks = previewRepair(damaged, 'leaks')
    expect(leaks.changes.map((change) => change.problem.code)).toEqual(['leaked-clusters'])
    expect(leaks.changes[0]?.action).toBe(
      'Punch holes over 128 KiB of leaked data in 2 clusters of the image file; the guest view does not change.',
    )
    expect(leaks.remaining.map((open) => open.code)).toEqual([
      'stray-bits',
      'backing-unreachable',
      'all-allocated-missing',
    ])
    const all = previewRepair(damaged, 'all')
    expect(all.changes.map((change) => change.problem.code)).toEqual([
      'stray-bits',
      'leaked-clusters',
      'all-allocated-missing',
    ])
    expect(all.changes[0]?.action).toContain('Clear the bits set past the last cluster')
    expect(all.remaining.map((open) => open.code)).toEqual(['backing-unreachable'])
  })

  it('offers leaks only when it differs from all, and nothing when nothing repairs', () => {
    expect(repairLevels(damaged)).toEqual(['leaks', 'all'])
    expect(repairLevels(report([STRAY]))).toEqual(['all'])
    expect(repairLevels(report([LEAK]))).toEqual(['all'])
    expect(repairLevels(report([NAME, BITS]))).toEqual([])
    expect(repairLevels(report([{ ...STRAY, repaired: true }]))).toEqual([])
  })

  it('describes a repairable finding it has no sentence for by its code', () => {
    const odd = problem({ code: 'future-thing', severity: 'corruption', repair: 'all' })
    expect(previewRepair(report([odd]), 'all').changes[0]?.action).toBe('Repair future thing.')
  })
})

describe('checkVerdict', () => {
  it('puts the worst first and says it in a sentence', () => {
    expect(checkVerdict(report([]))).toEqual({
      verdict: 'clean',
      sentence: 'No problems found in /x.add-cow.',
    })
    expect(checkVerdict(report([FLAG]), 'x.add-cow').sentence).toBe(
      'x.add-cow has no damage; 1 warning worth a look.',
    )
    expect(checkVerdict(report([LEAK], { leaks: 2, 'leaked-bytes': 131072 })).sentence).toBe(
      "/x.add-cow wastes space: 2 leaked clusters, 128 KiB. The guest's data is not harmed.",
    )
    expect(checkVerdict(report([STRAY, LEAK], { corruptions: 1, leaks: 2 })).sentence).toBe(
      '/x.add-cow has 1 corruption and 2 leaked clusters.',
    )
    expect(checkVerdict(report([NAME, STRAY], { 'check-errors': 1, corruptions: 1 })).verdict).toBe(
      'incomplete',
    )
    expect(checkVerdict(report([], { format: 'raw', unsupported: true })).sentence).toBe(
      '/x.add-cow is a raw image; check looks at add-cow overlays only.',
    )
  })
})
