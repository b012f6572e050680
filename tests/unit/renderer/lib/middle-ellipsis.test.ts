import { describe, expect, it } from 'vitest'
import { splitForMiddleEllipsis } from '../../../../renderer/src/lib/middle-ellipsis'

// Where a path is split for the middle ellipsis: the file name stays whole.

describe('splitForMiddleEllipsis', () => {
  it('keeps the file name whole and lets the folders shrink', () => {
    expect(splitForMiddleEllipsis('/tmp/a/b/golden.img')).toEqual({
      head: '/tmp/a/b',
      tail: '/golden.img',
    })
    expect(splitForMiddleEllipsis('C:\\vms\\golden.img')).toEqual({
      head: 'C:\\vms',
      tail: '\\golden.img',
    })
    expect(splitForMiddleEllipsis('/tmp/folder/')).toEqual({ head: '/tmp', tail: '/folder/' })
    expect(splitForMiddleEllipsis('/golden.img')).toEqual({ head: '', tail: '/golden.img' })
  })

  it('keeps a given number of characters, or the end of a text without separators', () => {
    expect(splitForMiddleEllipsis('abcdefghij', 3)).toEqual({ head: 'abcdefg', tail: 'hij' })
    expect(splitForMiddleEllipsis('abc', 10)).toEqual({ head: '', tail: 'abc' })
    expect(splitForMiddleEllipsis('ubuntu-server-cloudimg-amd64.img')).toEqual({
      head: 'ubuntu-server-cloudi',
      tail: 'mg-amd64.img',
    })
    const plain = splitForMiddleEllipsis('short')
    expect(plain.head + plain.tail).toBe('short')
  })
})
