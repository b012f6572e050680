import { describe, expect, it } from 'vitest'
import { IpcRequestError } from '../../../renderer/src/api/client'
import { describeError, describeIpcError } from '../../../renderer/src/lib/errors'
import { splitForMiddleEllipsis } from '../../../renderer/src/lib/middle-ellipsis'

// Errors as the image views show them (main's sentence, the file and value when it leaves them
// out, what to do), and where a path is split for the middle ellipsis.

describe('describeError', () => {
  it('keeps a sentence that names the file, and adds what to do', () => {
    const error = new IpcRequestError(
      {
        code: 'ALREADY_EXISTS',
        message: '/vm/o.add-cow already exists; refusing to overwrite it.',
        path: '/vm/o.add-cow',
      },
      'operations:create-overlay',
    )
    expect(describeError(error)).toBe(
      '/vm/o.add-cow already exists; refusing to overwrite it. Choose another name, or move the existing file away first.',
    )
  })

  it('adds the file and the value at fault when the sentence leaves them out', () => {
    expect(
      describeIpcError({
        code: 'CORRUPT_HEADER',
        message: 'The cluster bits are out of range',
        path: '/vm/bad.add-cow',
        field: 'cluster_bits',
        value: 25,
      }),
    ).toBe(
      'The cluster bits are out of range. File: /vm/bad.add-cow. cluster_bits: 25. Run Check on the image to see what is damaged.',
    )
  })

  it('reads any other thrown value as a sentence', () => {
    expect(describeError(new Error('The connection was lost'))).toBe('The connection was lost.')
    expect(describeError('plain')).toBe('plain.')
    expect(describeIpcError({ code: 'INTERNAL', message: 'Boom!' })).toBe('Boom!')
  })
})

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
