import { EngineError } from '../../engine/errors'
import { measureImage } from '../../engine/ops/measure'
import { parseSize } from '../../engine/units'
import { defineCommand } from '../command'
import {
  FORMAT_OPTION,
  JSON_OPTION,
  OUTPUT_USAGE,
  NAME_POLICY_OPTIONS,
  NAME_POLICY_USAGE,
  policyFrom,
} from '../options'

/** `addcow measure`: the sizes a converted (or new) raw or qcow2 image needs, as qemu-img measure. */
export const measureCommand = defineCommand({
  name: 'measure',
  summary: 'how large a converted (or new) raw or qcow2 file would be',
  usage: `addcow measure [--json] [-O raw|qcow2] [-o cluster_size=SIZE] [--size SIZE | [-f FMT] IMAGE]

  -O raw|qcow2          the format convert would write (default raw)
  -o cluster_size=SIZE  qcow2 cluster size (default 64K)
  --size SIZE           measure an empty image of SIZE instead of IMAGE's contents
  --json                {"required": N, "fully-allocated": N} (qemu-img's keys)
${OUTPUT_USAGE}
  -f FMT                format of IMAGE (default: probed)
${NAME_POLICY_USAGE}

"required size" is what 'addcow convert -O FMT IMAGE OUT' needs at most; "fully allocated
size" what the file needs once every cluster is written. qemu-img measure computes the same
numbers for the same contents.`,
  options: {
    O: { type: 'string', short: 'O' },
    o: { type: 'string', short: 'o', multiple: true },
    size: { type: 'string' },
    ...JSON_OPTION,
    ...FORMAT_OPTION,
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 0, max: 1, names: 'one IMAGE (or --size SIZE)' },
  async run({ values, positionals }, context) {
    if ((positionals[0] === undefined) === (values.size === undefined)) {
      throw new EngineError(
        'BAD_ARGUMENT',
        "Expected either an IMAGE or --size SIZE. Try 'addcow help measure'.",
        { field: 'size' },
      )
    }
    let clusterSize: number | undefined
    for (const item of (values.o ?? []).flatMap((text) => text.split(','))) {
      const [key, value] = item.split('=', 2)
      if (key !== 'cluster_size' || !value) {
        throw new EngineError(
          'BAD_ARGUMENT',
          `-o '${item}' is not an option measure knows (only cluster_size=SIZE, for qcow2).`,
          { field: '-o', value: item },
        )
      }
      clusterSize = parseSize(value, 'cluster size')
    }
    const result = await measureImage({
      outputFormat: values.O ?? 'raw',
      ...(positionals[0] !== undefined ? { source: positionals[0] } : {}),
      ...(values.size !== undefined ? { size: parseSize(values.size, 'size') } : {}),
      ...(values.f ? { format: values.f } : {}),
      ...(clusterSize !== undefined ? { clusterSize } : {}),
      policy: await policyFrom(context, values),
      signal: context.signal,
    })
    context.stdout.write(
      values.json
        ? JSON.stringify(
            { required: result.required, 'fully-allocated': result['fully-allocated'] },
            null,
            4,
          ) + '\n'
        : `required size: ${result.required}\nfully allocated size: ${result['fully-allocated']}\n`,
    )
    return 0
  },
})
