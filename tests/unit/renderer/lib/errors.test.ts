import { describe, expect, it } from 'vitest'
import { IpcRequestError } from '../../../../renderer/src/api/client'
import { describeError, describeIpcError } from '../../../../renderer/src/lib/errors'

// Errors as the image views show them (main's sentence, the file and value when it leaves them
// out, what to do).

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

describe('permission errors and the word "base"', () => {
  it('asks for read access when reading was refused, write access when writing was', () => {
    const read = describeIpcError({
      code: 'PERMISSION_DENIED',
      message: 'Cannot open /x/base.raw: permission denied.',
      path: '/x/base.raw',
    })
    expect(read).toContain('permission to read')
    const write = describeIpcError({
      code: 'PERMISSION_DENIED',
      message: 'Cannot open for writing /x/ov.add-cow: permission denied.',
      path: '/x/ov.add-cow',
    })
    expect(write).toContain('permission to write')
  })

  it('says "base" where the engine says "backing file"', () => {
    expect(
      describeIpcError({
        code: 'MISSING_FILE',
        message: 'The backing file /b.raw of /o is missing.',
      }),
    ).toMatch(/^The base \/b\.raw of \/o is missing\./)
  })
})
