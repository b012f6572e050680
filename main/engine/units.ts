import { EngineError } from './errors'

/** 1 KiB .. 1 EiB, as qemu-img reads size suffixes (powers of 1024). */
const SUFFIXES: Record<string, number> = {
  '': 1,
  B: 1,
  K: 2 ** 10,
  M: 2 ** 20,
  G: 2 ** 30,
  T: 2 ** 40,
  P: 2 ** 50,
  E: 2 ** 60,
}

/**
 * Parse a size such as `64M`, `1.5G` or `4096` the way qemu-img does (suffixes K M G T P E are
 * powers of 1024; an optional trailing `iB` or `B` is accepted). The result must be an exact
 * whole number of bytes no larger than Number.MAX_SAFE_INTEGER.
 */
export function parseSize(text: string, what = 'size'): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgtpeb]?)(?:i?b)?\s*$/i.exec(text)
  if (!match) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `The ${what} '${text}' is not a size (use e.g. 64M, 2G).`,
      {
        field: what,
        value: text,
      },
    )
  }
  const multiplier = SUFFIXES[(match[2] ?? '').toUpperCase()] ?? 1
  const value = Number(match[1]) * multiplier
  if (value > Number.MAX_SAFE_INTEGER) {
    throw new EngineError(
      'SIZE_LIMIT',
      `The ${what} '${text}' is more than this tool can address (2^53 - 1 bytes).`,
      {
        field: what,
        value: text,
      },
    )
  }
  if (!Number.isSafeInteger(value)) {
    throw new EngineError('BAD_ARGUMENT', `The ${what} '${text}' is not a whole number of bytes.`, {
      field: what,
      value: text,
    })
  }
  return value
}

/** Format bytes for people: `1.5 GiB`, `64 KiB`, `512 B`. */
export function formatSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB']
  let value = bytes
  let unit = 0
  while (Math.abs(value) >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  if (unit === 0) return `${bytes} B`
  const rounded =
    value >= 100 ? value.toFixed(0) : value >= 10 ? value.toFixed(1) : value.toFixed(2)
  const trimmed = rounded.includes('.') ? rounded.replace(/\.?0+$/, '') : rounded
  return `${trimmed} ${units[unit]}`
}

/**
 * Format bytes exactly, in the largest unit that divides them: `8188 KiB` (not `8 MiB` for
 * 8 MiB less 4 KiB), `64 KiB`, `1 GiB`, `513 B`. For tables where a rounded length would hide
 * an off-by-a-cluster difference (the allocation map).
 */
export function formatExactSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB']
  let unit = 0
  while (unit < units.length - 1 && bytes !== 0 && bytes % 1024 ** (unit + 1) === 0) unit++
  return `${bytes / 1024 ** unit} ${units[unit]}`
}

/** Round `value` up to a multiple of `multiple`. */
export function roundUp(value: number, multiple: number): number {
  return Math.ceil(value / multiple) * multiple
}
