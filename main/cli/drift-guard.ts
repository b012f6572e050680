import type { Disk } from '../engine/disk'
import { assertBaseUnchanged, checkBaseDrift } from '../engine/ops/drift'
import type { CommandContext } from './command'

const DOING = { serve: 'serve it', 'qemu-cmd': 'print a command line for it', launch: 'launch it' }

/**
 * The checks serve, qemu-cmd and launch run on the opened image before anything uses it: the
 * drift guard (engine/ops/drift.ts) refuses a base that changed since its fingerprint was
 * recorded, unless --accept-base is given, which records the base's current fingerprint.
 */
export function diskChecks(
  context: CommandContext,
  command: 'serve' | 'qemu-cmd' | 'launch',
  acceptBase: boolean,
): ((disk: Disk) => Promise<void>)[] {
  return [
    async (disk) => {
      const report = await checkBaseDrift(disk, context.library, { signal: context.signal })
      assertBaseUnchanged(report, { force: acceptBase, doing: DOING[command] })
      if (
        acceptBase &&
        report.current &&
        (report.status === 'changed' || report.status === 'not-recorded')
      ) {
        if (report.status === 'changed') {
          context.stderr.write(
            `addcow ${command}: accepting the changed base ${report.base} (${report.changes.join('; ')}).\n`,
          )
        }
        await context.library.recordBaseFingerprint(report.current)
      }
    },
  ]
}
