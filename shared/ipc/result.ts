import type { ErrorCode } from '../error-codes'

/**
 * An error as it crosses the IPC boundary: a stable code, one sentence for the user, and where
 * known the file, field and value at fault.
 *
 * Electron keeps only the message of a thrown error, so handlers never throw across IPC: they
 * return an {@link IpcResult}. `value` is reduced to a JSON primitive.
 */
export interface IpcError {
  code: ErrorCode
  message: string
  path?: string
  field?: string
  value?: string | number | boolean | null
}

/** The envelope of every reply: the value, or an error with a stable code. */
export type IpcResult<T> = { ok: true; value: T } | { ok: false; error: IpcError }

/** A successful result. */
export function ok<T>(value: T): IpcResult<T> {
  return { ok: true, value }
}

/** A failed result with `code` and `message`, plus the details that locate the fault. */
export function fail<T = never>(
  code: ErrorCode,
  message: string,
  details: Omit<IpcError, 'code' | 'message'> = {},
): IpcResult<T> {
  return { ok: false, error: { code, message, ...details } }
}

/** Reduce any value to the JSON primitive an {@link IpcError} may carry. */
export function errorValue(value: unknown): IpcError['value'] {
  if (value === null || value === undefined) return null
  if (typeof value === 'boolean') return value
  // A value read from a hostile file can be megabytes long: keep what a person can read.
  if (typeof value === 'string') return value.length > 500 ? `${value.slice(0, 500)}…` : value
  if (typeof value === 'number') return Number.isFinite(value) ? value : String(value)
  if (typeof value === 'bigint') return value.toString()
  try {
    const text = JSON.stringify(value)
    return text === undefined ? String(value) : text.slice(0, 500)
  } catch {
    return String(value).slice(0, 500)
  }
}
