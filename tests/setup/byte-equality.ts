import { expect } from 'vitest'

/**
 * Setup file of the unit project: `toEqual` and `toStrictEqual` compare two byte arrays of the
 * same kind (two Buffers, two Uint8Arrays) with one memcmp instead of element by element.
 *
 * Vitest walks a typed array as an iterable, one JavaScript call per byte, so comparing the
 * megabytes an image test reads back cost seconds. The answer is the same: equal when the
 * lengths and every byte are (a byte array holds nothing else), and a failure still prints
 * vitest's own diff. Anything else (a Buffer against a plain array, other typed arrays) falls
 * through to vitest's comparison.
 */
function equalBytes(a: unknown, b: unknown): boolean | undefined {
  if (!(a instanceof Uint8Array) || !(b instanceof Uint8Array)) return undefined
  if (a.constructor !== b.constructor) return undefined
  return Buffer.compare(a, b) === 0
}

// Without isolation the setup file runs before every test file of a worker: install once.
const INSTALLED = Symbol.for('addcow.test.byteEquality')
const registry = globalThis as { [INSTALLED]?: true }
if (!registry[INSTALLED]) {
  registry[INSTALLED] = true
  expect.addEqualityTesters([equalBytes])
}
