import type { FormatDriver } from './disk'
import { EngineError, quote } from './errors'
import { addCowDriver } from './formats/add-cow/add-cow-disk'
import { rawDriver } from './formats/raw/raw'
import { qcow2Driver } from './formats/qcow2/qcow2-disk'
import { cowDriver } from './formats/cow/cow-disk'
import {
  addCowV12Driver,
  addCowV18Driver,
  addCowV3Driver,
  addCowV7Driver,
} from './formats/add-cow-drafts/draft-disk'

const drivers = new Map<string, FormatDriver>()

/** Add a driver to the registry (formats register themselves at import time). */
export function registerDriver(driver: FormatDriver): void {
  drivers.set(driver.name, driver)
}

registerDriver(rawDriver)
// V18 before add-cow: both claim "ACOW" with 100, and V18 only claims files the current rules refuse.
registerDriver(addCowV18Driver)
registerDriver(addCowDriver)
registerDriver(qcow2Driver)
registerDriver(cowDriver)
registerDriver(addCowV12Driver)
registerDriver(addCowV7Driver)
registerDriver(addCowV3Driver)

/** Every registered driver. */
export function listDrivers(): FormatDriver[] {
  return [...drivers.values()]
}

/** The driver for `format`, or undefined when no driver has that name. */
export function findDriver(format: string): FormatDriver | undefined {
  return drivers.get(format)
}

/** The driver for `format`, or an UNSUPPORTED_FORMAT error naming `where`. */
export function getDriver(format: string, where?: string): FormatDriver {
  const driver = drivers.get(format)
  if (!driver) {
    const known = [...drivers.keys()].join(', ')
    throw new EngineError(
      'UNSUPPORTED_FORMAT',
      `Format ${quote(format)}${where ? ` (${where})` : ''} is not supported; known formats: ${known}.`,
      { field: 'format', value: format, ...(where ? { path: where } : {}) },
    )
  }
  return driver
}

/** The best-scoring driver for a file head, or raw when no driver claims it. */
export function probeDriver(head: Uint8Array, fileLength: number): FormatDriver {
  let best: FormatDriver = rawDriver
  let bestScore = 0
  for (const driver of drivers.values()) {
    const score = driver.probe(head, fileLength)
    if (score > bestScore) {
      best = driver
      bestScore = score
    }
  }
  return best
}
