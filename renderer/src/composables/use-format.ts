const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB']

/** Bytes for people: `1.5 GiB`, `64 KiB`, `512 B`. */
export function formatBytes(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) return '—'
  let value = bytes
  let unit = 0
  while (Math.abs(value) >= 1024 && unit < UNITS.length - 1) {
    value /= 1024
    unit++
  }
  if (unit === 0) return `${bytes} B`
  const digits = value >= 100 ? 0 : value >= 10 ? 1 : 2
  // Trim zeros after the decimal point only: 200 stays 200, 1.50 becomes 1.5, 2.00 becomes 2.
  const text = digits === 0 ? value.toFixed(0) : value.toFixed(digits).replace(/\.?0+$/, '')
  return `${text} ${UNITS[unit]}`
}

/** A duration in seconds for people: `45 s`, `3 min 20 s`, `2 h 5 min`. */
export function formatDuration(seconds: number | null | undefined): string {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return '—'
  const whole = Math.max(0, Math.round(seconds))
  if (whole < 60) return `${whole} s`
  if (whole < 3600) return `${Math.floor(whole / 60)} min ${whole % 60} s`
  return `${Math.floor(whole / 3600)} h ${Math.floor((whole % 3600) / 60)} min`
}

const SIZE_UNITS: Record<string, number> = { '': 1, K: 2 ** 10, M: 2 ** 20, G: 2 ** 30, T: 2 ** 40 }

/**
 * Parse a size as the CLI does (`10G`, `512M`, `4096`; suffixes are powers of 1024). Returns
 * null when the text is not a whole number of bytes.
 */
export function parseSizeText(text: string): number | null {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$/i.exec(text)
  if (!match) return null
  const value = Number(match[1]) * (SIZE_UNITS[(match[2] ?? '').toUpperCase()] ?? 1)
  return Number.isSafeInteger(value) ? value : null
}

/** The last part of a path (either separator). */
export function baseName(path: string): string {
  return (
    path
      .split(/[\\/]/)
      .filter((part) => part !== '')
      .pop() ?? path
  )
}

/** The folder of a path (either separator), without a trailing separator. */
export function folderOf(path: string): string {
  const index = Math.max(path.lastIndexOf('/'), path.lastIndexOf('\\'))
  if (index <= 0) return path.slice(0, index + 1) || path
  return path.slice(0, index)
}

const COUNT_FORMAT = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 })

/** A whole number with the user's locale grouping: `16 777 216`, `16,777,216`. */
export function formatCount(value: number): string {
  return COUNT_FORMAT.format(value)
}

/** The exact byte count, for a tooltip beside {@link formatBytes}: `67,108,864 bytes`. */
export function formatBytesExact(bytes: number | null | undefined): string {
  if (bytes === null || bytes === undefined) return ''
  return `${formatCount(bytes)} ${bytes === 1 ? 'byte' : 'bytes'}`
}

/**
 * A share in percent for people: one decimal, `<0.1%` for a small share that is not zero
 * (a few clusters written on a large disk), `>99.9%` for one just short of all.
 */
export function formatPercent(percent: number): string {
  if (percent <= 0) return '0%'
  if (percent < 0.1) return '<0.1%'
  if (percent >= 100) return '100%'
  if (percent > 99.9) return '>99.9%'
  const rounded = Math.round(percent * 10) / 10
  return `${Number.isInteger(rounded) ? rounded.toFixed(0) : rounded.toFixed(1)}%`
}
