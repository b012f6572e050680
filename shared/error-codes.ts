/**
 * Stable error codes shared by the engine, the CLI, the NBD server and the IPC contract.
 *
 * A code never changes meaning once released: the UI and scripts match on it. Add new codes at
 * the end of their group; never reuse a removed one.
 */
export const ERROR_CODES = [
  // Input and environment
  'BAD_REQUEST',
  'BAD_ARGUMENT',
  'NOT_FOUND',
  'ALREADY_EXISTS',
  'PERMISSION_DENIED',
  'IO_ERROR',
  'BUSY',
  'ABORTED',
  'FORBIDDEN',
  // Formats
  'UNSUPPORTED_FORMAT',
  'UNSUPPORTED_FEATURE',
  'BAD_MAGIC',
  'CORRUPT_HEADER',
  'CORRUPT_IMAGE',
  'FORMAT_MISMATCH',
  'SIZE_LIMIT',
  'READ_ONLY',
  'OUT_OF_RANGE',
  // Chains and names
  'CHAIN_LOOP',
  'CHAIN_TOO_DEEP',
  'SAME_FILE',
  'UNTRUSTED_NAME',
  'REFUSED_NAME',
  'MISSING_FILE',
  'BASE_CHANGED',
  // Operations
  'WOULD_SHRINK',
  'CONFIRMATION_REQUIRED',
  'NOT_CAPABLE',
  /** Other images read through this one (Delete files refuses). */
  'HAS_DEPENDENTS',
  'INTERNAL',
] as const

/** One of {@link ERROR_CODES}. */
export type ErrorCode = (typeof ERROR_CODES)[number]

/** Whether `value` is a known error code (used when decoding errors that crossed a process). */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && (ERROR_CODES as readonly string[]).includes(value)
}
