import { describe, expect, it } from 'vitest'
import { formatExactSize, formatSize, parseSize, roundUp } from '../../../main/engine/units'
import { expectEngineErrorSync } from '../../helpers/errors'

describe('parseSize', () => {
  it.each([
    ['4096', 4096],
    ['0', 0],
    ['64K', 65536],
    ['64k', 65536],
    ['1M', 1048576],
    ['1.5G', 1.5 * 2 ** 30],
    ['2T', 2 * 2 ** 40],
    ['4P', 4 * 2 ** 50],
    ['10MiB', 10 * 2 ** 20],
    ['10MB', 10 * 2 ** 20],
    ['512B', 512],
    [' 8G ', 8 * 2 ** 30],
  ])('%s is %i bytes', (text, bytes) => {
    expect(parseSize(text)).toBe(bytes)
  })

  it.each(['', 'x', '-1', '1X', '1..5K', 'K', '1 2'])('refuses %j', (text) => {
    const error = expectEngineErrorSync(() => parseSize(text, 'cluster size'), 'BAD_ARGUMENT')
    expect(error.message).toContain(`cluster size '${text}'`)
  })

  it.each(['1E', '8P', '9007199254740993'])('refuses %s as beyond 2^53', (text) => {
    expectEngineErrorSync(() => parseSize(text), 'SIZE_LIMIT')
  })

  it.each(['0.5', '1.1K'])('refuses %s as not whole', (text) => {
    expectEngineErrorSync(() => parseSize(text), 'BAD_ARGUMENT')
  })
})

describe('formatSize and roundUp', () => {
  it('formats like people read sizes', () => {
    expect(formatSize(0)).toBe('0 B')
    expect(formatSize(512)).toBe('512 B')
    expect(formatSize(65536)).toBe('64 KiB')
    expect(formatSize(1.5 * 2 ** 30)).toBe('1.5 GiB')
    expect(formatSize(2 ** 60)).toBe('1 EiB')
  })

  it('formats exactly, in the largest unit that divides the size', () => {
    expect(formatExactSize(0)).toBe('0 B')
    expect(formatExactSize(513)).toBe('513 B')
    expect(formatExactSize(65536)).toBe('64 KiB')
    expect(formatExactSize(8 * 2 ** 20 - 4096)).toBe('8188 KiB')
    expect(formatExactSize(3 * 2 ** 30)).toBe('3 GiB')
    expect(formatExactSize(2 ** 40 + 2 ** 20)).toBe('1048577 MiB')
    expect(formatExactSize(2 ** 60)).toBe('1 EiB')
  })

  it('rounds up to a multiple', () => {
    expect(roundUp(0, 4096)).toBe(0)
    expect(roundUp(1, 4096)).toBe(4096)
    expect(roundUp(4096, 4096)).toBe(4096)
  })
})
