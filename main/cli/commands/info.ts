import type { ImageInfo } from '../../../shared/image-types'
import { bounded } from '../../engine/errors'
import { realPath } from '../../engine/fs'
import { imageInfo } from '../../engine/ops/info'
import { formatSize } from '../../engine/units'
import { defineCommand } from '../command'
import {
  FORMAT_OPTION,
  JSON_OPTION,
  OUTPUT_USAGE,
  NAME_POLICY_OPTIONS,
  NAME_POLICY_USAGE,
  policyFrom,
} from '../options'

/**
 * The on-disk size: with a separate data (image) file, the sum says that it adds both files and
 * shows each (qemu-img's "disk size" is one file's).
 */
function diskSize(info: ImageInfo): string {
  const data = info['data-file-actual-size']
  if (data === undefined) return formatSize(info['actual-size'])
  const own = info['actual-size'] - data
  return `${formatSize(info['actual-size'])} (both files: ${formatSize(own)} add-cow file + ${formatSize(data)} image file)`
}

function describe(info: ImageInfo): string {
  const lines = [
    `image: ${info.filename}`,
    `file format: ${info.format}`,
    `virtual size: ${formatSize(info['virtual-size'])} (${info['virtual-size']} bytes)`,
    `disk size: ${diskSize(info)}`,
  ]
  if (info['cluster-size'] !== undefined) lines.push(`cluster_size: ${info['cluster-size']}`)
  const names = new Map((info.names ?? []).map((name) => [name.stored, name]))
  if (info['backing-filename'] !== undefined) {
    const verdict = names.get(info['backing-filename'])
    const note = verdict && !verdict.followed ? `; NOT FOLLOWED: ${verdict.reason}` : ''
    lines.push(
      `backing file: ${bounded(info['backing-filename'])} (actual path: ${bounded(info['full-backing-filename'] ?? '')}${note})`,
      `backing file format: ${info['backing-filename-format']}`,
    )
  }
  if (info['data-file'] !== undefined) {
    const verdict = names.get(info['data-file'])
    const note = verdict && !verdict.followed ? `; NOT FOLLOWED: ${verdict.reason}` : ''
    lines.push(
      `image file: ${bounded(info['data-file'])} (actual path: ${bounded(info['full-data-file'] ?? '')}${note})`,
      `image file format: ${info['data-file-format']}`,
    )
  }
  if (info['total-clusters'] !== undefined && info['allocated-clusters'] !== undefined) {
    const total = info['total-clusters']
    const percent = total === 0 ? 100 : (info['allocated-clusters'] / total) * 100
    lines.push(
      `allocated: ${info['allocated-clusters']} of ${total} clusters (${percent.toFixed(1)}%)${info['all-allocated'] ? ', ALL_ALLOCATED' : ''}`,
    )
  }
  for (const warning of info.warnings ?? []) lines.push(`warning: ${warning}`)
  return lines.join('\n') + '\n'
}

/** `addcow info`: an image (and with --backing-chain every layer below it), as text or JSON. */
export const infoCommand = defineCommand({
  name: 'info',
  summary: 'show an image, its files, names and allocation',
  usage: `addcow info [--json] [--backing-chain] [-f FMT] IMAGE

  --json            qemu-img's JSON keys (an array with --backing-chain)
${OUTPUT_USAGE}
  --backing-chain   describe every layer below IMAGE too
  -f FMT            format of IMAGE (default: probed)
${NAME_POLICY_USAGE}

info never follows a name the policy refuses: it shows it, and says why.`,
  options: {
    ...JSON_OPTION,
    'backing-chain': { type: 'boolean' },
    ...FORMAT_OPTION,
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 1, max: 1, names: 'one IMAGE' },
  async run({ values, positionals }, context) {
    const infos = await imageInfo(positionals[0]!, {
      backingChain: values['backing-chain'] ?? false,
      policy: await policyFrom(context, values),
      ...(values.f ? { format: values.f } : {}),
    })
    if (values.json) {
      const output = values['backing-chain'] ? infos : infos[0]
      context.stdout.write(JSON.stringify(output, null, 4) + '\n')
    } else {
      context.stdout.write(infos.map(describe).join('\n'))
      // A commit of this overlay that stopped part way (issue 12): where it stands, until it is
      // finished or rolled back.
      const recorded = await context.library.interruptedCommit(await realPath(positionals[0]!))
      if (recorded) {
        // Loaded only here: commit's module is large, and info's start-up counts (issue 15).
        const { describeInterruptedCommit, interruptedCommitNow } =
          await import('../../engine/ops/commit')
        // A live commit still running is not interrupted; one a crash cut short is.
        const interrupted = await interruptedCommitNow(recorded)
        if (!interrupted) return 0
        const cancelled = interrupted.code === 'ABORTED'
        context.stdout.write(
          `interrupted commit: ${describeInterruptedCommit(interrupted, cancelled)}\n`,
        )
      }
    }
    return 0
  },
})
