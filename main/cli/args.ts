import { parseArgs, type ParseArgsConfig } from 'node:util'
import { EngineError } from '../engine/errors'

/** The parsed options and positionals of one command line. */
export interface ParsedCommand<T extends NonNullable<ParseArgsConfig['options']>> {
  values: ReturnType<typeof parseArgs<{ options: T; allowPositionals: true; strict: true }>>['values']
  positionals: string[]
}

/**
 * Parse a command's argv strictly (unknown options are errors), turning parseArgs' errors into
 * one clear sentence with the command's name.
 */
export function parseCommandArgs<T extends NonNullable<ParseArgsConfig['options']>>(
  command: string,
  argv: string[],
  options: T,
  positionals: { min: number; max: number; names: string },
): ParsedCommand<T> {
  let parsed
  try {
    parsed = parseArgs({ args: argv, options, allowPositionals: true, strict: true })
  } catch (error) {
    const message = error instanceof Error ? error.message.replace(/\.?$/, '') : String(error)
    throw new EngineError('BAD_ARGUMENT', `addcow ${command}: ${message}. Try 'addcow help ${command}'.`)
  }
  if (parsed.positionals.length < positionals.min || parsed.positionals.length > positionals.max) {
    throw new EngineError(
      'BAD_ARGUMENT',
      `addcow ${command} expects ${positionals.names}; got ${parsed.positionals.length} argument(s). Try 'addcow help ${command}'.`,
    )
  }
  return { values: parsed.values, positionals: parsed.positionals }
}
