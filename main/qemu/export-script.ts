import { dirname } from 'node:path'
import { bounded } from '../engine/errors'
import { commandLines, shellQuote, type QemuCommand, type QemuCommandOptions } from './command'

/** What {@link exportScript} needs besides the command. */
export interface ExportScriptOptions {
  /** The builder's options the command was made from (its firmware's variable store). */
  options: QemuCommandOptions
  /**
   * A private folder the command's sockets live in (a saved machine's run folder): the script
   * makes it (mode 0700) and removes its sockets and the folder at the end.
   */
  runFolder?: string
  /** What the script boots, for its first comment line. */
  title: string
}

/** How long the script waits for `addcow serve` to listen before giving up, in tenths of a second. */
const READY_TENTHS = 600

/**
 * A POSIX sh script (Quickemu-style) that runs a command line as the app would: start the
 * export (`addcow serve` with the same socket and options, $ADDCOW overrides the program),
 * wait until it listens (serve prints its URI only then), run exactly `command`'s QEMU argv,
 * and stop the export when QEMU exits or the script is interrupted (trap). QEMU's status is
 * the script's. A command without an export (--via native/raw) just runs QEMU.
 */
export function exportScript(command: QemuCommand, script: ExportScriptOptions): string {
  const lines = [
    '#!/bin/sh',
    // A file name may hold a newline: the comment must stay one line, not become a command.
    `# ${bounded(script.title, 4096)}`,
    '# Made by addcow: it starts the NBD export, waits until it listens, runs QEMU with exactly',
    '# the command line addcow shows, and stops the export when QEMU exits.',
    'set -u',
    'ADDCOW=${ADDCOW:-addcow}',
  ]
  const folder = script.runFolder
  if (folder !== undefined) {
    lines.push(
      `run_folder=${shellQuote(folder)}`,
      'mkdir -m 700 "$run_folder" 2>/dev/null || [ -d "$run_folder" ] || exit 1',
    )
  }
  const firmware = script.options.firmware
  if (firmware?.kind === 'uefi' && firmware.vars) {
    const vars = firmware.vars
    lines.push(
      '# The UEFI variable store: a private copy of the template, kept across boots.',
      `if [ ! -e ${shellQuote(vars.file)} ]; then`,
      `  mkdir -p -m 700 ${shellQuote(dirname(vars.file))} &&`,
      `    cp ${shellQuote(vars.template)} ${shellQuote(vars.file)} &&`,
      `    chmod 600 ${shellQuote(vars.file)} || exit 1`,
      'fi',
    )
  }
  const serving = command.prerequisite !== null
  if (serving || folder !== undefined) {
    lines.push(
      ...(serving ? ['ready=$(mktemp) || exit 1', 'serve_pid='] : []),
      'clean_up() {',
      ...(serving
        ? [
            '  if [ -n "$serve_pid" ]; then',
            '    kill -TERM "$serve_pid" 2>/dev/null',
            '    wait "$serve_pid" 2>/dev/null',
            '  fi',
            '  rm -f "$ready"',
          ]
        : []),
      ...(folder !== undefined
        ? [
            '  rm -f "$run_folder/nbd.sock" "$run_folder/qmp.sock"',
            '  rmdir "$run_folder" 2>/dev/null',
          ]
        : []),
      '  :',
      '}',
      'trap clean_up EXIT',
      "trap 'exit 130' INT",
      "trap 'exit 143' TERM HUP",
    )
  }
  if (command.prerequisite) {
    const [, ...serveArgs] = command.prerequisite.args
    lines.push(
      '# The export: addcow serve prints its URI once it listens.',
      `"$ADDCOW" ${serveArgs.map(shellQuote).join(' ')} >"$ready" &`,
      'serve_pid=$!',
      'tenths=0',
      'while [ ! -s "$ready" ]; do',
      `  if ! kill -0 "$serve_pid" 2>/dev/null || [ "$tenths" -ge ${READY_TENTHS} ]; then`,
      '    echo "addcow serve did not start listening; see its message above." >&2',
      '    exit 1',
      '  fi',
      '  sleep 0.1 2>/dev/null || sleep 1',
      '  tenths=$((tenths + 1))',
      'done',
    )
  }
  lines.push(
    '# QEMU: the command line addcow shows.',
    ...commandLines(command.binary, command.explained),
  )
  lines.push('exit $?')
  return lines.join('\n') + '\n'
}
