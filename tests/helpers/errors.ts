import { expect } from 'vitest'
import { EngineError, isEngineError } from '../../main/engine/errors'
import type { ErrorCode } from '../../shared/error-codes'

/** Await `promise` and expect it to reject with an EngineError of `code`; returns the error. */
export async function expectEngineError(
  promise: Promise<unknown>,
  code: ErrorCode,
): Promise<EngineError> {
  let caught: unknown = null
  try {
    await promise
  } catch (error) {
    caught = error
  }
  expect(caught, `expected an EngineError ${code}`).not.toBeNull()
  if (!isEngineError(caught))
    throw new Error(`expected an EngineError ${code}, got ${String(caught)}`)
  expect(caught.code, caught.message).toBe(code)
  return caught
}

/** Run `action` and expect it to throw an EngineError of `code` synchronously. */
export function expectEngineErrorSync(action: () => unknown, code: ErrorCode): EngineError {
  let caught: unknown = null
  try {
    action()
  } catch (error) {
    caught = error
  }
  if (!isEngineError(caught))
    throw new Error(`expected an EngineError ${code}, got ${String(caught)}`)
  expect(caught.code, caught.message).toBe(code)
  return caught
}

/** Await `promise` and expect it to reject with an EngineError of `code` whose message matches `text`. */
export async function expectError(
  promise: Promise<unknown>,
  code: string,
  text: RegExp,
): Promise<void> {
  const error = await promise.then(
    () => null,
    (caught: unknown) => caught,
  )
  expect(error).toBeInstanceOf(EngineError)
  expect((error as EngineError).code).toBe(code)
  expect((error as EngineError).message).toMatch(text)
}
