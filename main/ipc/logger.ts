/** Where main writes what the user does not see: bugs with their stack, refused senders. */
export interface Logger {
  warn(message: string): void
  error(message: string, error?: unknown): void
}

/** A logger that writes to stderr (the Electron main process's and `addcow web`'s console). */
export const consoleLogger: Logger = {
  warn: (message) => console.warn(`addcow: ${message}`),
  error: (message, error) =>
    console.error(
      `addcow: ${message}`,
      error instanceof Error ? (error.stack ?? error.message) : (error ?? ''),
    ),
}
