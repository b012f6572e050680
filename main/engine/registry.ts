import type { FormatDescription, FormatDriver } from './disk'
import { EngineError, quote } from './errors'
import { ADD_COW_FORMAT } from './formats/add-cow/format'
import {
  ADD_COW_V12_FORMAT,
  ADD_COW_V18_FORMAT,
  ADD_COW_V3_FORMAT,
  ADD_COW_V7_FORMAT,
} from './formats/add-cow-drafts/format'
import { COW_FORMAT } from './formats/cow/format'
import { QCOW2_FORMAT } from './formats/qcow2/format'
import { RAW_FORMAT } from './formats/raw/format'

/**
 * One row of the driver table: what is known of a format without its driver (name, probe,
 * extensions, facts), and how to load the driver. A driver's module is imported only when an
 * image of its format is opened, created or checked, so `addcow info` of an add-cow overlay on a
 * raw base loads those two drivers, not qcow2's (start-up, issue 15).
 */
export interface FormatEntry extends FormatDescription {
  load(): Promise<FormatDriver>
}

const formats = new Map<string, FormatEntry>()

/** Add a format to the table: its description and its driver's loader. */
export function registerFormat(entry: FormatEntry): void {
  formats.set(entry.name, entry)
}

/** Add a driver that is already loaded (tests register their own formats this way). */
export function registerDriver(driver: FormatDriver): void {
  registerFormat({ ...driver, load: () => Promise.resolve(driver) })
}

registerFormat({
  ...RAW_FORMAT,
  load: async () => (await import('./formats/raw/raw')).rawDriver,
})
// V18 before add-cow: both claim "ACOW" with 100, and V18 only claims files the current rules refuse.
registerFormat({
  ...ADD_COW_V18_FORMAT,
  load: async () => (await import('./formats/add-cow-drafts/draft-disk')).addCowV18Driver,
})
registerFormat({
  ...ADD_COW_FORMAT,
  load: async () => (await import('./formats/add-cow/add-cow-disk')).addCowDriver,
})
registerFormat({
  ...QCOW2_FORMAT,
  load: async () => (await import('./formats/qcow2/qcow2-disk')).qcow2Driver,
})
registerFormat({
  ...COW_FORMAT,
  load: async () => (await import('./formats/cow/cow-disk')).cowDriver,
})
registerFormat({
  ...ADD_COW_V12_FORMAT,
  load: async () => (await import('./formats/add-cow-drafts/draft-disk')).addCowV12Driver,
})
registerFormat({
  ...ADD_COW_V7_FORMAT,
  load: async () => (await import('./formats/add-cow-drafts/draft-disk')).addCowV7Driver,
})
registerFormat({
  ...ADD_COW_V3_FORMAT,
  load: async () => (await import('./formats/add-cow-drafts/draft-disk')).addCowV3Driver,
})

/** Every format in the table, in probing order. */
export function listFormats(): FormatEntry[] {
  return [...formats.values()]
}

/** The format called `format`, or undefined when the table has none of that name. */
export function findFormat(format: string): FormatEntry | undefined {
  return formats.get(format)
}

/** The format called `format`, or an UNSUPPORTED_FORMAT error naming `where`. */
export function getFormat(format: string, where?: string): FormatEntry {
  const entry = formats.get(format)
  if (!entry) {
    const known = [...formats.keys()].join(', ')
    throw new EngineError(
      'UNSUPPORTED_FORMAT',
      `Format ${quote(format)}${where ? ` (${where})` : ''} is not supported; known formats: ${known}.`,
      { field: 'format', value: format, ...(where ? { path: where } : {}) },
    )
  }
  return entry
}

/** The driver for `format`, loaded on first use, or an UNSUPPORTED_FORMAT error naming `where`. */
export function loadDriver(format: string, where?: string): Promise<FormatDriver> {
  return getFormat(format, where).load()
}

/** The driver for `format`, or undefined when no format has that name. */
export async function findDriver(format: string): Promise<FormatDriver | undefined> {
  return formats.get(format)?.load()
}

/** The best-scoring format for a file head, or the fallback (raw) when no format claims it. */
export function probeHead(head: Uint8Array, fileLength: number): FormatEntry {
  let best = fallbackFormat()
  let bestScore = 0
  for (const entry of formats.values()) {
    const score = entry.probe(head, fileLength)
    if (score > bestScore) {
      best = entry
      bestScore = score
    }
  }
  return best
}

/** The format a file is when no format claims it. */
function fallbackFormat(): FormatEntry {
  const fallback = [...formats.values()].find((entry) => entry.fallback)
  if (!fallback) throw new EngineError('INTERNAL', 'The driver table has no fallback format.')
  return fallback
}
