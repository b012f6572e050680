import { EngineError } from '../../engine/errors'
import { convertImage } from '../../engine/ops/convert'
import { formatSize, parseSize } from '../../engine/units'
import { defineCommand } from '../command'
import {
  ACCEPT_BASE_OPTION,
  FORMAT_OPTION,
  NAME_POLICY_OPTIONS,
  NAME_POLICY_USAGE,
  policyFrom,
  PROGRESS_OPTION,
} from '../options'
import { progressBar } from '../progress'

/** The formats convert writes. */
const OUTPUT_FORMATS = ['raw', 'qcow2'] as const

/** The cluster size of `-o cluster_size=N` (the only -o key convert knows). */
function clusterSizeFrom(texts: readonly string[]): number | undefined {
  let size: number | undefined
  for (const item of texts.flatMap((text) => text.split(','))) {
    if (item === '') continue
    const [key, value] = item.split('=', 2)
    if (key !== 'cluster_size' || !value) {
      throw new EngineError(
        'BAD_ARGUMENT',
        `-o '${item}' is not an option convert knows (only cluster_size=SIZE, for qcow2).`,
        { field: '-o', value: item },
      )
    }
    size = parseSize(value, 'cluster size')
  }
  return size
}

/** `addcow convert`: an image and its chain into one standalone raw or qcow2 file. */
export const convertCommand = defineCommand({
  name: 'convert',
  summary: 'write an image and its chain into one standalone raw or qcow2 file',
  usage: `addcow convert [-p] [-f FMT] [-O raw|qcow2] [-o cluster_size=SIZE] IMAGE OUTPUT

  -O raw|qcow2          format of OUTPUT (default raw, as qemu-img convert)
  -o cluster_size=SIZE  qcow2 cluster size (default 64K)
  -f FMT                format of IMAGE (default: probed)
  -p                    show a progress bar
  --accept-base         convert although the base changed since the overlay was made
${NAME_POLICY_USAGE}

OUTPUT gets the guest view of IMAGE and every layer below it, without a backing file; zeros
stay holes (raw) or unallocated clusters (qcow2). OUTPUT takes its name only when complete:
an error or Ctrl-C leaves no half-written file (and an existing OUTPUT as it was).`,
  options: {
    O: { type: 'string', short: 'O' },
    o: { type: 'string', short: 'o', multiple: true },
    ...FORMAT_OPTION,
    ...PROGRESS_OPTION,
    ...ACCEPT_BASE_OPTION,
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 2, max: 2, names: 'IMAGE and OUTPUT' },
  async run({ values, positionals }, context) {
    const outputFormat = values.O ?? 'raw'
    if (!(OUTPUT_FORMATS as readonly string[]).includes(outputFormat)) {
      throw new EngineError(
        'BAD_ARGUMENT',
        `-O '${outputFormat}' is not one of ${OUTPUT_FORMATS.join(', ')} (convert writes standalone raw or qcow2 files).`,
        { field: '-O', value: outputFormat },
      )
    }
    const clusterSize = clusterSizeFrom(values.o ?? [])
    const bar = progressBar(context.stderr, 'Converting', values.p ?? false)
    const result = await convertImage({
      source: positionals[0]!,
      output: positionals[1]!,
      outputFormat,
      ...(values.f ? { format: values.f } : {}),
      ...(clusterSize !== undefined ? { clusterSize } : {}),
      policy: await policyFrom(context, values),
      library: context.library,
      acceptBase: values['accept-base'] ?? false,
      signal: context.signal,
      onProgress: bar.update,
    })
    bar.finish()
    context.stdout.write(
      `Converted ${positionals[0]} to ${result.output} (${result.format}, ${formatSize(result.size)}).\n`,
    )
    return 0
  },
})
