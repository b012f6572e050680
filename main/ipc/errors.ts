import type { z } from 'zod'
import { isEngineError } from '../engine/errors'
import { errorValue, type IpcError } from '../../shared/ipc/result'
import type { Logger } from './logger'

/**
 * The engine's sentences end with the CLI's advice ("pass --accept-base …"); the app has no
 * flags, so its users get the app's way of doing the same. Each entry is one sentence part the
 * engine writes, and the app's words for it.
 */
const APP_WORDING: readonly [RegExp, string][] = [
  [
    /\s*\(pass --accept-base if the change is intended\)/g,
    ' (if the change is intended, accept it in Check)',
  ],
  [/; pass --force to commit anyway\./g, '; confirm in Commit to commit anyway.'],
  [/\s*\(pass --force to roll back anyway\)/g, ' (confirm the rollback to go on anyway)'],
  [
    /; pass --allow-name with that path \(or approve it in the app\) if you trust this image/g,
    '; trust it from the Library if you trust this image',
  ],
  [/; pass --allow-name if you trust it/g, '; trust it from the Library if you trust this image'],
  [/run qemu-img check -r all( first)?/g, 'let qemu-img check repair it$1'],
  [/\s*\(qemu-img check -r all repairs them\)/g, ' (qemu-img check can repair them)'],
]

/** An engine sentence in the app's words: no CLI flags (see {@link APP_WORDING}). */
export function appWording(message: string): string {
  let text = message
  for (const [pattern, replacement] of APP_WORDING) text = text.replace(pattern, replacement)
  return text
}

/**
 * Turn anything a handler threw into an {@link IpcError}.
 *
 * An EngineError keeps its stable code, its sentence and the file, field and value at fault.
 * Anything else is a bug: its stack goes to the log in main, and the renderer gets INTERNAL
 * with the error's message only.
 */
export function toIpcError(error: unknown, log: Logger, where: string): IpcError {
  if (isEngineError(error)) {
    const result: IpcError = { code: error.code, message: appWording(error.message) }
    if (error.path !== undefined) result.path = error.path
    if (error.field !== undefined) result.field = error.field
    if (error.value !== undefined) result.value = errorValue(error.value)
    return result
  }
  log.error(`internal error in ${where}`, error)
  const reason = error instanceof Error ? error.message : String(error)
  return { code: 'INTERNAL', message: `Internal error in ${where}: ${reason}` }
}

/** Render a schema issue path as `paths[0].name`. */
export function issuePath(path: readonly PropertyKey[]): string {
  let text = ''
  for (const key of path) {
    if (typeof key === 'number') text += `[${key}]`
    else text += text === '' ? String(key) : `.${String(key)}`
  }
  return text
}

/** The BAD_REQUEST error for a payload that does not match its channel's schema. */
export function badRequest(channel: string, error: z.ZodError): IpcError {
  const issue = error.issues[0]
  const field = issue ? issuePath(issue.path) : ''
  const what = field === '' ? 'the request' : field
  const message = `Bad request on ${channel}: ${what} ${issue?.message ?? 'is invalid'}.`
  return field === '' ? { code: 'BAD_REQUEST', message } : { code: 'BAD_REQUEST', message, field }
}
