/**
 * Commands that run a long-lived NBD export in this process (`serve`, and `launch`, which
 * serves the overlay to its QEMU): they run with {@link SERVER_V8_FLAGS}.
 */
export const SERVER_COMMANDS: ReadonlySet<string> = new Set(['serve', 'launch'])

/**
 * V8 flags for a server process, which V8 reads only when the process starts (setting them
 * later has no effect on the heap's sizes).
 *
 * Under a full load (nbdcopy and two fio jobs on a 1 TiB overlay, tests/bench/nbd-throughput.ts)
 * V8's defaults cost `addcow serve` most of its memory beyond Node's own: the young generation
 * grows to two 16 MiB semi-spaces, and the old generation fills with promoted request garbage up
 * to three or four times the ~11 MB that is live before a full collection runs (peaks of 121 to
 * 157 MB measured). Two 4 MiB semi-spaces and an old generation allowed to grow by half its live
 * size between collections brought the peak to 93-98 MB, for more collections: about 15% more
 * server CPU per 4 KiB I/O in the same benchmark. 2 MiB semi-spaces saved a few MB more and cost
 * twice that; the old generation's bound alone left the peak at 121 MB.
 */
export const SERVER_V8_FLAGS: readonly string[] = [
  '--max-semi-space-size=4',
  '--heap-growing-percent=50',
]

/** What {@link serverRelaunchArgv} looks at: the process's own values in main.ts. */
export interface ProcessView {
  execPath: string
  /** Node's options before the script (process.execArgv). */
  execArgv: readonly string[]
  /** The whole argv: node, the script, then the command's arguments. */
  argv: readonly string[]
  /** NODE_OPTIONS, whose flags count as given too. */
  nodeOptions: string | undefined
}

/** The flag's name, without a value: `--max-semi-space-size=2` → `--max-semi-space-size`. */
function flagName(flag: string): string {
  const equals = flag.indexOf('=')
  return (equals < 0 ? flag : flag.slice(0, equals)).replaceAll('_', '-')
}

/**
 * The argv to execute again for a server command (`process.execve`), with the
 * {@link SERVER_V8_FLAGS} that the user did not set already (in Node's options or
 * NODE_OPTIONS), before the user's own options; null when there is nothing to add: another
 * command, or every flag already given (which is also the case after the relaunch itself, so it
 * happens once).
 */
export function serverRelaunchArgv(view: ProcessView): string[] | null {
  const [, script, command] = view.argv
  if (script === undefined || command === undefined || !SERVER_COMMANDS.has(command)) return null
  const given = new Set(
    [...view.execArgv, ...(view.nodeOptions ?? '').split(/\s+/)]
      .filter((option) => option.startsWith('--'))
      .map(flagName),
  )
  const missing = SERVER_V8_FLAGS.filter((flag) => !given.has(flagName(flag)))
  if (missing.length === 0) return null
  return [view.execPath, ...missing, ...view.execArgv, ...view.argv.slice(1)]
}
