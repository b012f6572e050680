/**
 * A progress bar for `-p` on a terminal: redrawn at most every 100 ms on stderr, erased when
 * done. Off a terminal it stays silent, so logs and pipes stay clean.
 */
export function progressBar(
  stream: NodeJS.WritableStream & { isTTY?: boolean; columns?: number },
  label: string,
  enabled: boolean,
): { update: (done: number, total: number) => void; finish: () => void } {
  if (!enabled || !stream.isTTY) return { update: () => undefined, finish: () => undefined }
  let last = 0
  const draw = (done: number, total: number): void => {
    const fraction = total > 0 ? Math.min(1, done / total) : 1
    const width = Math.max(10, Math.min(50, (stream.columns ?? 80) - label.length - 12))
    const filled = Math.round(fraction * width)
    stream.write(
      `\r${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${(fraction * 100).toFixed(1).padStart(5)}%`,
    )
  }
  return {
    update(done, total) {
      const now = Date.now()
      if (now - last < 100 && done < total) return
      last = now
      draw(done, total)
    },
    finish() {
      stream.write('\r\x1b[K')
    },
  }
}
