import type { ErrorCode } from '../../shared/error-codes'

/** Details that locate an engine error: the file, the field and the value at fault. */
export interface EngineErrorDetails {
  path?: string
  field?: string
  offset?: number
  value?: unknown
  cause?: unknown
}

/**
 * The only error type the engine throws on purpose.
 *
 * `code` is stable (see shared/error-codes.ts) and `message` is one sentence a user can act on,
 * naming the file and the value at fault. Anything else that escapes the engine is a bug.
 */
export class EngineError extends Error {
  readonly code: ErrorCode
  readonly path: string | undefined
  readonly field: string | undefined
  readonly offset: number | undefined
  readonly value: unknown

  constructor(code: ErrorCode, message: string, details: EngineErrorDetails = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause })
    this.name = 'EngineError'
    this.code = code
    this.path = details.path
    this.field = details.field
    this.offset = details.offset
    this.value = details.value
  }
}

/** Whether `error` is an {@link EngineError}, optionally with the given code. */
export function isEngineError(error: unknown, code?: ErrorCode): error is EngineError {
  return error instanceof EngineError && (code === undefined || error.code === code)
}

const ERRNO_CODES: Record<string, ErrorCode> = {
  ENOENT: 'NOT_FOUND',
  ENOTDIR: 'NOT_FOUND',
  EEXIST: 'ALREADY_EXISTS',
  EACCES: 'PERMISSION_DENIED',
  EPERM: 'PERMISSION_DENIED',
  EROFS: 'READ_ONLY',
  EBUSY: 'BUSY',
  EAGAIN: 'BUSY',
  EWOULDBLOCK: 'BUSY',
  EFBIG: 'SIZE_LIMIT',
  ENOSPC: 'IO_ERROR',
  EISDIR: 'BAD_ARGUMENT',
}

/**
 * Turn a Node system error into an {@link EngineError} naming `path` and what was being done.
 * Engine errors pass through unchanged.
 */
export function wrapIoError(error: unknown, path: string, doing: string): EngineError {
  if (error instanceof EngineError) return error
  const errno = (error as NodeJS.ErrnoException | undefined)?.code
  const code = (errno && ERRNO_CODES[errno]) || 'IO_ERROR'
  const reason =
    errno === 'ENOENT'
      ? 'no such file'
      : errno === 'EACCES' || errno === 'EPERM'
        ? 'permission denied'
        : errno === 'ENOSPC'
          ? 'no space left on the device'
          : error instanceof Error
            ? error.message
            : String(error)
  return new EngineError(code, `Cannot ${doing} ${path}: ${reason}.`, { path, cause: error })
}

/** Throw ABORTED if `signal` has fired. Call between units of work in long operations. */
export function throwIfAborted(signal: AbortSignal | undefined, what = 'operation'): void {
  if (signal?.aborted) {
    throw new EngineError('ABORTED', `The ${what} was cancelled.`)
  }
}
