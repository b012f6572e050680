import type { ImageInfo } from '../../../shared/image-types'
import { imageInfo } from '../../engine/ops/info'
import { formatSize } from '../../engine/units'
import { parseCommandArgs } from '../args'
import { NAME_POLICY_OPTIONS, NAME_POLICY_USAGE, policyFrom, type Command } from '../context'

function describe(info: ImageInfo): string {
  const lines = [
    `image: ${info.filename}`,
    `file format: ${info.format}`,
    `virtual size: ${formatSize(info['virtual-size'])} (${info['virtual-size']} bytes)`,
    `disk size: ${formatSize(info['actual-size'])}`,
  ]
  if (info['cluster-size'] !== undefined) lines.push(`cluster_size: ${info['cluster-size']}`)
  const names = new Map((info.names ?? []).map((name) => [name.stored, name]))
  if (info['backing-filename'] !== undefined) {
    const verdict = names.get(info['backing-filename'])
    const note = verdict && !verdict.followed ? `; NOT FOLLOWED: ${verdict.reason}` : ''
    lines.push(
      `backing file: ${info['backing-filename']} (actual path: ${info['full-backing-filename']}${note})`,
      `backing file format: ${info['backing-filename-format']}`,
    )
  }
  if (info['data-file'] !== undefined) {
    const verdict = names.get(info['data-file'])
    const note = verdict && !verdict.followed ? `; NOT FOLLOWED: ${verdict.reason}` : ''
    lines.push(
      `image file: ${info['data-file']} (actual path: ${info['full-data-file']}${note})`,
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

export const infoCommand: Command = {
  name: 'info',
  summary: 'show an image, its files, names and allocation',
  usage: `addcow info [--json] [--backing-chain] [-f FMT] IMAGE

  --json            qemu-img's JSON keys (an array with --backing-chain)
  --backing-chain   describe every layer below IMAGE too
  -f FMT            format of IMAGE (default: probed)
${NAME_POLICY_USAGE}

info never follows a name the policy refuses: it shows it, and says why.`,
  async run(context) {
    const { values, positionals } = parseCommandArgs(
      'info',
      context.argv,
      {
        json: { type: 'boolean' },
        'backing-chain': { type: 'boolean' },
        f: { type: 'string', short: 'f' },
        ...NAME_POLICY_OPTIONS,
      },
      { min: 1, max: 1, names: 'one IMAGE' },
    )
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
    }
    return 0
  },
}
