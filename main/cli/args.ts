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
    // runCli prefixes "addcow COMMAND: "; keep parseArgs' first sentence ("Unknown option '-x'").
    const text = error instanceof Error ? error.message : String(error)
    const message = (text.split('. ')[0] ?? text).replace(/\.?$/, '')
    throw new EngineError('BAD_ARGUMENT', `${message}. Try 'addcow help ${command}'.`)
  }
  if (parsed.positionals.length < positionals.min || parsed.positionals.length > positionals.max) {
    const count = parsed.positionals.length
    throw new EngineError(
      'BAD_ARGUMENT',
      `Expected ${positionals.names}; got ${count} argument${count === 1 ? '' : 's'}. Try 'addcow help ${command}'.`,
    )
  }
  return { values: parsed.values, positionals: parsed.positionals }
}
