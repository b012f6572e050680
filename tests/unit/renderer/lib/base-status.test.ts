import { describe, expect, it } from 'vitest'
import { BaseStatusSchema } from '../../../../shared/ipc/contract'
import { BASE_STATUS_LOOK } from '../../../../renderer/src/lib/base-status'

// Issue 12 item 5: every base state has its own look, and an unverified base never looks
// verified.

describe('BASE_STATUS_LOOK', () => {
  it('has a distinct label and a sentence for every state main can report', () => {
    const states = BaseStatusSchema.options
    expect(Object.keys(BASE_STATUS_LOOK).sort()).toEqual([...states].sort())
    const labels = states.map((state) => BASE_STATUS_LOOK[state].label)
    expect(new Set(labels).size).toBe(states.length)
    for (const state of states) expect(BASE_STATUS_LOOK[state].sentence).toMatch(/\.$/)
  })

  it('shows green only for a base that matches its fingerprint', () => {
    const green = BaseStatusSchema.options.filter(
      (state) => BASE_STATUS_LOOK[state].type === 'success',
    )
    expect(green).toEqual(['ok'])
    expect(BASE_STATUS_LOOK.unverified).toMatchObject({ label: 'Unverified', type: 'warning' })
    expect(BASE_STATUS_LOOK.changed.type).toBe('error')
    expect(BASE_STATUS_LOOK.missing.type).toBe('error')
  })
})
