import { describe, expect, it } from 'vitest'
import { bounded, QUOTE_LIMIT, quote } from '../../../main/engine/errors'

// The one helper every message that quotes a value from a file goes through (issue 13 item 3).

describe('quote', () => {
  it('quotes a short printable value as it is', () => {
    expect(quote('base.raw')).toBe("'base.raw'")
    expect(quote('base.raw', '"')).toBe('"base.raw"')
    expect(quote('naïve €.raw')).toBe("'naïve €.raw'")
  })

  it('escapes the mark, backslashes, controls, NUL and bidi overrides', () => {
    expect(quote("it's")).toBe("'it\\'s'")
    expect(quote('a"b\\c', '"')).toBe('"a\\"b\\\\c"')
    expect(quote('a\0b\nc\x7f')).toBe("'a\\u0000b\\u000ac\\u007f'")
    expect(quote('evil\u202egpj.raw')).toBe("'evil\\u202egpj.raw'")
    expect(quote('\u2028')).toBe("'\\u2028'")
  })

  it('cuts a long value with an ellipsis and states its full length', () => {
    const text = quote('x'.repeat(360000), '"')
    expect(text).toBe(`"${'x'.repeat(QUOTE_LIMIT)}…" (360000 characters)`)
    // Escapes count against the limit; the length is the value's, in characters.
    const nuls = quote('img.raw' + '\0'.repeat(65445))
    expect(nuls.length).toBeLessThan(QUOTE_LIMIT + 40)
    expect(nuls).toMatch(/^'img\.raw(\\u0000)+…' \(65452 characters\)$/)
    // A character outside the BMP counts once and is never split.
    const emoji = quote('😀'.repeat(300))
    expect(emoji).toBe(`'${'😀'.repeat(QUOTE_LIMIT / 2)}…' (300 characters)`)
  })

  it('keeps a value exactly at the limit whole', () => {
    expect(quote('y'.repeat(QUOTE_LIMIT))).toBe(`'${'y'.repeat(QUOTE_LIMIT)}'`)
  })
})

describe('bounded', () => {
  it('leaves a short printable path alone and escapes nothing else', () => {
    expect(bounded("/tmp/a b/it's\\.raw")).toBe("/tmp/a b/it's\\.raw")
  })

  it('cuts a long path and escapes unprintable characters, without quotes', () => {
    expect(bounded('/tmp/' + 'a'.repeat(5000))).toBe(
      `/tmp/${'a'.repeat(QUOTE_LIMIT - 5)}… (5005 characters)`,
    )
    expect(bounded('/tmp/\u202ex')).toBe('/tmp/\\u202ex')
  })
})
