import type { ErrorCode } from '../../../shared/error-codes'
import type { IpcError } from '../../../shared/ipc/result'

/**
 * Errors as people read them: main's sentence (which names the file and value at fault), the
 * file and value when the sentence does not already say them, and what the user can do.
 */

/** What the user can do about each kind of error (codes without advice get none). */
const ADVICE: Partial<Record<ErrorCode, string>> = {
  NOT_FOUND: 'Check the path, or put the file back where it was.',
  MISSING_FILE: 'Put the missing file back, or rebase the overlay onto another base.',
  ALREADY_EXISTS: 'Choose another name, or move the existing file away first.',
  BUSY: 'Wait for the other operation on this file to finish, then try again.',
  IO_ERROR: 'Check the disk and try again.',
  UNTRUSTED_NAME:
    'If you made this image or trust where it came from, trust its base from the Library.',
  REFUSED_NAME: 'This name can never be followed; rebase the overlay onto a regular file.',
  BASE_CHANGED: 'Check the base: if the change was expected, accept it in Check.',
  BAD_MAGIC: 'Choose a disk image (add-cow, raw, qcow2 or cow).',
  UNSUPPORTED_FORMAT: 'Choose a disk image (add-cow, raw, qcow2 or cow).',
  CORRUPT_HEADER: 'Run Check on the image to see what is damaged.',
  CORRUPT_IMAGE: 'Run Check on the image to see what is damaged.',
  CHAIN_LOOP: 'Rebase one of the images so the chain ends at a base.',
  WOULD_SHRINK: 'Give a size at least as large as the existing file.',
  SIZE_LIMIT: 'Choose a smaller size or larger clusters.',
  SAME_FILE: 'Choose different files.',
}

/**
 * Permission advice names what is missing: the engine says "Cannot open X", "Cannot read X"
 * or "Cannot list X" when reading was refused, and "Cannot open for writing X", "Cannot write
 * X" or "Cannot create X" when writing was.
 */
function permissionAdvice(message: string): string {
  return /Cannot (open for writing|write|create|rename|remove|delete|truncate)\b/i.test(message)
    ? 'You need permission to write this file (and its folder); check its owner and permissions.'
    : 'You need permission to read this file (and to open its folder); check its owner and permissions.'
}

/** The app says "base" for what the engine and QEMU call the "backing file". */
export function plainWords(text: string): string {
  return text
    .replace(/\bbacking files\b/g, 'bases')
    .replace(/\bbacking file\b/g, 'base')
    .replace(/\bBacking files\b/g, 'Bases')
    .replace(/\bBacking file\b/g, 'Base')
}

function asIpcError(error: unknown): IpcError | null {
  if (typeof error !== 'object' || error === null) return null
  const candidate = (error as { error?: unknown }).error
  if (typeof candidate !== 'object' || candidate === null) return null
  const { code, message } = candidate as Partial<IpcError>
  return typeof code === 'string' && typeof message === 'string' ? (candidate as IpcError) : null
}

function sentence(text: string): string {
  const trimmed = text.trim()
  return trimmed === '' || /[.!?…]$/.test(trimmed) ? trimmed : `${trimmed}.`
}

/**
 * One or two plain sentences for an error a request threw: main's message, the file and the
 * value at fault if the message leaves them out, and the advice for its code.
 */
export function describeError(error: unknown): string {
  const ipc = asIpcError(error)
  if (ipc === null) return sentence(error instanceof Error ? error.message : String(error))
  return describeIpcError(ipc)
}

/** {@link describeError} for an error as it crossed IPC. */
export function describeIpcError(error: IpcError): string {
  const parts = [plainWords(sentence(error.message))]
  if (error.path && !error.message.includes(error.path)) parts.push(`File: ${error.path}.`)
  if (
    error.field &&
    error.value !== undefined &&
    error.value !== null &&
    !error.message.includes(String(error.value))
  ) {
    parts.push(`${error.field}: ${String(error.value)}.`)
  }
  const advice =
    error.code === 'PERMISSION_DENIED' ? permissionAdvice(error.message) : ADVICE[error.code]
  if (advice) parts.push(advice)
  return parts.join(' ')
}
