import { mapImage } from '../../engine/ops/map'
import { openImage } from '../../engine/open'
import { formatExactSize } from '../../engine/units'
import { defineCommand } from '../command'
import {
  FORMAT_OPTION,
  JSON_OPTION,
  OUTPUT_USAGE,
  NAME_POLICY_OPTIONS,
  NAME_POLICY_USAGE,
  policyFrom,
} from '../options'

/** `addcow map`: where each range of the guest view comes from, as text or qemu-img map JSON. */
export const mapCommand = defineCommand({
  name: 'map',
  summary: 'show where each range of the guest view comes from',
  usage: `addcow map [--json] [-f FMT] IMAGE

  --json   qemu-img map's shape: [{start, length, depth, present, zero, data}]
${OUTPUT_USAGE}
  -f FMT   format of IMAGE (default: probed)
${NAME_POLICY_USAGE}`,
  options: { ...JSON_OPTION, ...FORMAT_OPTION, ...NAME_POLICY_OPTIONS },
  positionals: { min: 1, max: 1, names: 'one IMAGE' },
  async run({ values, positionals }, context) {
    const disk = await openImage(positionals[0]!, {
      readOnly: true,
      policy: await policyFrom(context, values),
      ...(values.f ? { format: values.f } : {}),
    })
    try {
      const extents = await mapImage(disk, { signal: context.signal })
      if (values.json) {
        context.stdout.write(
          '[' + extents.map((extent) => JSON.stringify(extent)).join(',\n') + ']\n',
        )
        return 0
      }
      const layers: string[] = []
      for (let layer: typeof disk | null = disk; layer; layer = layer.backing)
        layers.push(layer.path)
      // Each range once, with the layer it is read from. Unlike qemu-img map's text, ranges that
      // read as zeros are listed too, and a column tells them from data: a layer's holes and its
      // data come from the same file.
      const rows = ['Offset              Length              Depth  Reads as  Source']
      for (const extent of extents) {
        const source = !extent.present ? '(unallocated)' : (layers[extent.depth] ?? '?')
        const readsAs = extent.data ? 'data' : 'zeros'
        rows.push(
          `0x${extent.start.toString(16).padStart(16, '0')}  ${formatExactSize(extent.length).padEnd(18)}  ${String(extent.depth).padEnd(5)}  ${readsAs.padEnd(8)}  ${source}`,
        )
      }
      context.stdout.write(rows.join('\n') + '\n')
      return 0
    } finally {
      await disk.close()
    }
  },
})
