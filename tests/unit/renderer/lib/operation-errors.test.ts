import { describe, expect, it } from 'vitest'
import { IpcRequestError } from '../../../../renderer/src/api/client'
import { explainError, ipcErrorOf } from '../../../../renderer/src/lib/operation-errors'

// Errors on the operation screens: the sentence main wrote, the file and value at fault, and
// what the user can do about it.

describe('explainError', () => {
  it('keeps the sentence, the file, the field and the value, and adds advice', () => {
    const error = new IpcRequestError(
      {
        code: 'BUSY',
        message: '/images/base.raw is in use by another program (write lock held)',
        path: '/images/base.raw',
        field: 'lock',
        value: 'write',
      },
      'operations:commit-overlay',
    )
    expect(explainError(error)).toEqual({
      code: 'BUSY',
      sentence: '/images/base.raw is in use by another program (write lock held).',
      path: '/images/base.raw',
      field: 'lock',
      value: 'write',
      advice:
        'Another program uses the file (a running VM, qemu-nbd, qemu-img or an NBD export of this app): stop it, then try again.',
      cancelled: false,
    })
  })

  it('treats a cancelled job as cancelled, with how to resume', () => {
    const explained = explainError({ code: 'ABORTED', message: 'commit was cancelled.' })
    expect(explained.cancelled).toBe(true)
    expect(explained.sentence).toBe('Commit was cancelled.')
    expect(explained.advice).toContain('start it again to resume')
  })

  it('advises what to do for a changed base and an untrusted name', () => {
    expect(explainError({ code: 'BASE_CHANGED', message: 'x' }).advice).toContain(
      'go on with the base as it is now',
    )
    expect(explainError({ code: 'UNTRUSTED_NAME', message: 'x' }).advice).toContain('Trust…')
  })

  it('reduces anything else to an INTERNAL error with its message', () => {
    expect(ipcErrorOf(new Error('socket closed'))).toEqual({
      code: 'INTERNAL',
      message: 'socket closed',
    })
    expect(explainError('plain text')).toMatchObject({
      code: 'INTERNAL',
      sentence: 'Plain text.',
      path: null,
      value: null,
    })
    expect(explainError({ code: 'NOT_FOUND', message: '', value: null }).sentence).toBe(
      'Something went wrong.',
    )
  })
})
