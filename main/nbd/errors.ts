import { isEngineError } from '../engine/errors'
import { NBD_ERROR, type NbdErrorValue } from './protocol'

/** The client broke a rule that leaves no way to carry on: the connection is closed. */
export class ProtocolViolation extends Error {}

/** An error a request ends with: the NBD error value and a message for the client. */
export class RequestError extends Error {
  constructor(
    readonly value: NbdErrorValue,
    message: string,
  ) {
    super(message)
  }
}

/** Map an engine failure to an NBD error value. */
export function nbdErrorOf(error: unknown): NbdErrorValue {
  if (error instanceof RequestError) return error.value
  if (!isEngineError(error)) return NBD_ERROR.EIO
  switch (error.code) {
    case 'READ_ONLY':
    case 'PERMISSION_DENIED':
      return NBD_ERROR.EPERM
    case 'OUT_OF_RANGE':
    case 'BAD_ARGUMENT':
    case 'BAD_REQUEST':
      return NBD_ERROR.EINVAL
    case 'SIZE_LIMIT':
      return NBD_ERROR.ENOSPC
    case 'NOT_CAPABLE':
      return NBD_ERROR.ENOTSUP
    default: {
      const errno = (error.cause as NodeJS.ErrnoException | undefined)?.code
      return errno === 'ENOSPC' || errno === 'EDQUOT' || errno === 'EFBIG'
        ? NBD_ERROR.ENOSPC
        : NBD_ERROR.EIO
    }
  }
}

/** Whether `error` only says that the peer went away. */
export function isDisconnect(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException | undefined)?.code
  return (
    code === 'EPIPE' ||
    code === 'ECONNRESET' ||
    code === 'ERR_STREAM_DESTROYED' ||
    code === 'ERR_STREAM_WRITE_AFTER_END'
  )
}
