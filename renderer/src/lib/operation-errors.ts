import type { ErrorCode } from '../../../shared/error-codes'
import type { IpcError } from '../../../shared/ipc/result'

/** An error as the operation screens show it: one sentence, where, and what to do. */
export interface ExplainedError {
  code: ErrorCode
  /** The sentence main wrote, ending with a full stop. */
  sentence: string
  /** The file at fault, when main named one. */
  path: string | null
  /** The field and the value at fault ("cluster_bits", "25"), when main named them. */
  field: string | null
  value: string | null
  /** What the user can do about it. */
  advice: string
  /** The user stopped the operation: not a failure to dramatize. */
  cancelled: boolean
}

/** What to do, per error code; `null` when the sentence already says it all. */
const ADVICE: Partial<Record<ErrorCode, string>> = {
  BAD_REQUEST: 'Check the values you entered and try again.',
  BAD_ARGUMENT: 'Check the values you entered and try again.',
  NOT_FOUND:
    'Check that the file still exists at that path, or pick the image again from the library.',
  MISSING_FILE:
    'Put the missing file back where the image expects it, or use Locate… on the base (Library, Check, Launch) to point the overlay at the file where it is now.',
  ALREADY_EXISTS: 'Choose another file name, or remove the existing file first.',
  PERMISSION_DENIED: 'Give your user write access to the file or its folder, then try again.',
  IO_ERROR: 'Check the disk and the connection to AddCow Studio, then try again.',
  BUSY: 'Another program uses the file (a running VM, qemu-nbd, qemu-img or an NBD export of this app): stop it, then try again.',
  ABORTED:
    'The operation was cancelled at a safe point (every file is valid); start it again to resume.',
  UNSUPPORTED_FORMAT: 'Pick an add-cow overlay: this operation does not apply to this format.',
  UNSUPPORTED_FEATURE: 'Open the image with a newer version of AddCow Studio.',
  BAD_MAGIC: 'Pick the add-cow file of the overlay, not another file.',
  CORRUPT_HEADER: 'Run Check on the image to see what is damaged and what can be repaired.',
  CORRUPT_IMAGE: 'Run Check on the image to see what is damaged and what can be repaired.',
  FORMAT_MISMATCH: 'Give the format the file really has.',
  SIZE_LIMIT: 'Use a smaller disk or a larger cluster size.',
  READ_ONLY: 'Make the file writable, or work on a copy.',
  OUT_OF_RANGE: 'Use a value inside the range given.',
  CHAIN_LOOP: 'Rebase one of the overlays onto a base outside the loop.',
  CHAIN_TOO_DEEP: 'Flatten or commit some layers of the chain to make it shorter.',
  SAME_FILE: 'Pick two different files.',
  UNTRUSTED_NAME:
    'If you know where this image came from, trust its base from the Library (“Trust…”), then try again.',
  REFUSED_NAME:
    'If you know where this image came from, trust its base from the Library (“Trust…”), then try again.',
  BASE_CHANGED:
    'If the base was changed on purpose, go on with the base as it is now; otherwise restore the base from a backup first.',
  WOULD_SHRINK: 'Pick a size at least as large as the current one.',
  CONFIRMATION_REQUIRED:
    'Look at the images listed, then confirm that they may change before you go on.',
  HAS_DEPENDENTS:
    'Delete, flatten or rebase the images listed first; a flattened image no longer reads its base.',
  NOT_CAPABLE: 'Choose another way to do it (the sentence above says which).',
  INTERNAL:
    'This is a bug in AddCow Studio: the details are in its log. Try again, and report it if it happens again.',
  FORBIDDEN: 'Reload the page from the address AddCow Studio printed.',
}

function isIpcError(value: unknown): value is IpcError {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as { code?: unknown }).code === 'string' &&
    typeof (value as { message?: unknown }).message === 'string'
  )
}

/** The IpcError inside whatever a request or job threw (IpcRequestError carries one). */
export function ipcErrorOf(error: unknown): IpcError {
  if (typeof error === 'object' && error !== null && 'error' in error) {
    const inner = (error as { error: unknown }).error
    if (isIpcError(inner)) return inner
  }
  if (isIpcError(error)) return error
  const message = error instanceof Error ? error.message : String(error)
  return { code: 'INTERNAL', message }
}

function sentence(text: string): string {
  const trimmed = text.trim()
  if (trimmed === '') return 'Something went wrong.'
  const first = trimmed.charAt(0).toUpperCase() + trimmed.slice(1)
  return /[.!?…]$/.test(first) ? first : `${first}.`
}

/** Turn anything a request or job threw into the sentence, the place and the advice to show. */
export function explainError(error: unknown): ExplainedError {
  const ipc = ipcErrorOf(error)
  const value =
    ipc.value === undefined || ipc.value === null || ipc.value === '' ? null : String(ipc.value)
  return {
    code: ipc.code,
    sentence: sentence(ipc.message),
    path: ipc.path ?? null,
    field: ipc.field ?? null,
    value,
    advice: ADVICE[ipc.code] ?? 'Try again; if it fails again, the sentence above names the cause.',
    cancelled: ipc.code === 'ABORTED',
  }
}
