import { streamOverlay } from '../../engine/ops/stream'
import { formatSize } from '../../engine/units'
import { defineCommand } from '../command'
import { NAME_POLICY_OPTIONS, NAME_POLICY_USAGE, policyFrom, PROGRESS_OPTION } from '../options'
import { progressBar } from '../progress'

/** `addcow stream`: flatten an overlay, so its image file stands alone (ALL_ALLOCATED). */
export const streamCommand = defineCommand({
  name: 'stream',
  summary: 'flatten an overlay: its raw image file becomes a standalone disk',
  usage: `addcow stream [-p] [--accept-base] OVERLAY

  -p              show a progress bar
  --accept-base   stream even though the base changed since its fingerprint was recorded
${NAME_POLICY_USAGE}

Copies every cluster still read from the backing chain into the image file, then sets
ALL_ALLOCATED. An interrupted stream resumes where it stopped when run again.`,
  options: {
    ...PROGRESS_OPTION,
    'accept-base': { type: 'boolean' },
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 1, max: 1, names: 'one OVERLAY' },
  async run({ values, positionals }, context) {
    const bar = progressBar(context.stderr, 'Streaming', values.p ?? false)
    const result = await streamOverlay({
      overlay: positionals[0]!,
      library: context.library,
      acceptBase: values['accept-base'] ?? false,
      policy: await policyFrom(context, values),
      signal: context.signal,
      onProgress: bar.update,
    })
    bar.finish()
    context.stdout.write(
      result.alreadyDone
        ? `${result.overlay} is already flattened (ALL_ALLOCATED is set).\n`
        : `Image streamed: ${result.clusters} cluster(s) marked, ${formatSize(result.copiedBytes)} copied, ${formatSize(result.zeroBytes)} of zeros left as holes; ALL_ALLOCATED is set.\n`,
    )
    return 0
  },
})
