/**
 * A VM's console text, as main keeps it for a page that opens on a running VM (a reload, a
 * second window) and as the page keeps it while it shows the VM: the text of each stream in
 * arrival order, the oldest dropped beyond a limit.
 */

/** One stretch of console text from one stream. */
export interface ConsoleChunk {
  stream: 'stdout' | 'stderr' | 'serial'
  text: string
}

/** Most console text kept per VM (characters); older text is dropped from the start. */
export const CONSOLE_LIMIT = 256 * 1024

/**
 * Add `text` of `stream` to `chunks` (joined to the last chunk when it is the same stream),
 * then drop text from the start until at most `limit` characters remain. `size` is the text
 * `chunks` holds before the call; returns what they hold after it.
 */
export function appendConsole(
  chunks: ConsoleChunk[],
  size: number,
  stream: ConsoleChunk['stream'],
  text: string,
  limit = CONSOLE_LIMIT,
): number {
  const last = chunks[chunks.length - 1]
  if (last && last.stream === stream) last.text += text
  else chunks.push({ stream, text })
  size += text.length
  while (size > limit && chunks.length > 0) {
    const first = chunks[0]!
    const excess = size - limit
    if (first.text.length <= excess) {
      chunks.shift()
      size -= first.text.length
    } else {
      first.text = first.text.slice(excess)
      size -= excess
    }
  }
  return size
}
