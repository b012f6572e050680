import { describe, expect, it } from 'vitest'
import {
  formatBytesExact,
  formatCount,
  formatPercent,
} from '../../../../renderer/src/composables/use-format'

// Numbers for people: shares that never read 0% when something was written, counts with the
// locale's grouping, and the exact byte count for tooltips.

describe('formatPercent', () => {
  it('says <0.1% for a small share that is not zero, and one decimal otherwise', () => {
    expect(formatPercent(0)).toBe('0%')
    expect(formatPercent(0.0001)).toBe('<0.1%')
    expect(formatPercent(0.1)).toBe('0.1%')
    expect(formatPercent(12.345)).toBe('12.3%')
    expect(formatPercent(50)).toBe('50%')
    expect(formatPercent(99.95)).toBe('>99.9%')
    expect(formatPercent(100)).toBe('100%')
  })
})

describe('formatCount and formatBytesExact', () => {
  it("groups digits as the user's locale does", () => {
    const grouped = new Intl.NumberFormat().format(16777216)
    expect(formatCount(16777216)).toBe(grouped)
    expect(grouped).not.toBe('16777216')
    expect(formatBytesExact(67108864)).toBe(`${new Intl.NumberFormat().format(67108864)} bytes`)
    expect(formatBytesExact(1)).toBe('1 byte')
    expect(formatBytesExact(null)).toBe('')
  })
})
