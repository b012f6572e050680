import type { FormatDriver } from './disk'
import { EngineError } from './errors'
import { addCowDriver } from './formats/add-cow/add-cow-disk'
import { rawDriver } from './formats/raw/raw'

const drivers = new Map<string, FormatDriver>()

/** Add a driver to the registry (formats register themselves at import time). */
export function registerDriver(driver: FormatDriver): void {
  drivers.set(driver.name, driver)
}

registerDriver(rawDriver)
registerDriver(addCowDriver)

/** Every registered driver. */
export function listDrivers(): FormatDriver[] {
  return [...drivers.values()]
}

/** The driver for `format`, or an UNSUPPORTED_FORMAT error naming `where`. */
export function getDriver(format: string, where?: string): FormatDriver {
  const driver = drivers.get(format)
  if (!driver) {
    const known = [...drivers.keys()].join(', ')
    throw new EngineError(
      'UNSUPPORTED_FORMAT',
      `Format '${format}'${where ? ` (${where})` : ''} is not supported; known formats: ${known}.`,
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
