/** The client broke a rule that leaves no way to carry on: the connection is closed. */
export class ProtocolViolation extends Error {}

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
