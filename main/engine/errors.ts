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

/** How many characters of a value from a file a message quotes before cutting it. */
export const QUOTE_LIMIT = 200

/**
 * The bound generic message builders put on a value they are handed: twice {@link QUOTE_LIMIT},
 * so a value already quoted (and cut) passes through unchanged while a raw one is still cut.
 */
export const SAFETY_LIMIT = 2 * QUOTE_LIMIT

/** Characters a message never prints as they are: controls, format (bidi) and separators. */
const UNPRINTABLE = /[\p{Cc}\p{Cf}\p{Zl}\p{Zp}\p{Cs}\p{Co}\p{Cn}]/u

function escapeCharacter(character: string, mark: string): string {
  if (mark !== '' && (character === mark || character === '\\')) return `\\${character}`
  if (!UNPRINTABLE.test(character)) return character
  const point = character.codePointAt(0) ?? 0
  return point > 0xffff ? `\\u{${point.toString(16)}}` : `\\u${point.toString(16).padStart(4, '0')}`
}

/** `value` escaped and cut to `limit` characters; `characters` is its full length when cut. */
function escapeBounded(
  value: string,
  mark: string,
  limit: number,
): { text: string; characters: number | null } {
  let text = ''
  let cut = false
  for (const character of value) {
    const piece = escapeCharacter(character, mark)
    if (text.length + piece.length > limit) {
      cut = true
      break
    }
    text += piece
  }
  if (!cut) return { text, characters: null }
  let characters = 0
  for (let index = 0; index < value.length; index++) {
    const code = value.charCodeAt(index)
    // A high surrogate followed by a low one is one character.
    if (code >= 0xd800 && code <= 0xdbff && index + 1 < value.length) {
      const next = value.charCodeAt(index + 1)
      if (next >= 0xdc00 && next <= 0xdfff) index++
    }
    characters++
  }
  return { text: `${text}…`, characters }
}

/**
 * Quote a value read from a file (a name, a format, any text) for an error message, bounded.
 *
 * The value is put between `mark`s with the mark, backslashes and unprintable characters
 * (controls, NUL, bidi overrides, line separators) escaped, so that it reads on one line and
 * cannot reorder the terminal. Past {@link QUOTE_LIMIT} characters of the quoted text it is cut
 * with an ellipsis and its full length is stated: `'abc…' (360000 characters)`. A hostile
 * length field can make a name megabytes long; every message that quotes one goes through here
 * so that no message grows with the file.
 */
export function quote(value: string, mark: "'" | '"' = "'", limit = QUOTE_LIMIT): string {
  const { text, characters } = escapeBounded(value, mark, limit)
  return characters === null
    ? `${mark}${text}${mark}`
    : `${mark}${text}${mark} (${characters} characters)`
}

/**
 * A path or other unquoted text derived from a file (a resolved backing name), for a message:
 * unprintable characters escaped and cut as by {@link quote}, without the marks, so that a name
 * made megabytes long stays short wherever it is shown.
 */
export function bounded(text: string, limit = QUOTE_LIMIT): string {
  if (text.length <= limit && !UNPRINTABLE.test(text)) return text
  const result = escapeBounded(text, '', limit)
  return result.characters === null
    ? result.text
    : `${result.text} (${result.characters} characters)`
}
