/** The two parts of a text elided in the middle: the head shrinks, the tail stays. */
export interface MiddleEllipsisParts {
  head: string
  tail: string
}

/** Characters kept at the end of a text that has no path separator. */
const DEFAULT_PLAIN_TAIL = 12

/**
 * Split `text` where a middle ellipsis should go: by default before the last path separator
 * (either `/` or `\`), so the file name stays whole and the folders shrink; with `tail`, that
 * many characters stay at the end. A text without a separator keeps its last characters.
 */
export function splitForMiddleEllipsis(text: string, tail?: number): MiddleEllipsisParts {
  if (tail !== undefined) {
    const kept = Math.max(0, Math.min(text.length, Math.floor(tail)))
    return { head: text.slice(0, text.length - kept), tail: text.slice(text.length - kept) }
  }
  // A trailing separator (a folder) belongs with the name before it.
  const trimmed = text.replace(/[\\/]+$/, '')
  const index = Math.max(trimmed.lastIndexOf('/'), trimmed.lastIndexOf('\\'))
  if (index > 0) return { head: text.slice(0, index), tail: text.slice(index) }
  if (index === 0) return { head: '', tail: text }
  const kept = Math.min(DEFAULT_PLAIN_TAIL, Math.floor(text.length / 2))
  return { head: text.slice(0, text.length - kept), tail: text.slice(text.length - kept) }
}
