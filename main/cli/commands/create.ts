import { createOverlay } from '../../engine/ops/create'
import { formatSize, parseSize } from '../../engine/units'
import { defineCommand } from '../command'
import { NAME_POLICY_OPTIONS, NAME_POLICY_USAGE, policyFrom } from '../options'

/** `addcow create`: a new add-cow overlay and its image file; the library trusts its names. */
export const createCommand = defineCommand({
  name: 'create',
  summary: 'create an add-cow overlay (and its raw image file)',
  usage: `addcow create [-b BASE] [-F BASE_FMT] [-i IMAGE_FILE] [-s SIZE] [-c CLUSTER_SIZE] OVERLAY

  -b BASE          backing file, stored as given (relative to OVERLAY's folder)
  -F BASE_FMT      format of BASE (default: probed from BASE)
  -i IMAGE_FILE    raw file that receives the writes (default: OVERLAY with .add-cow -> .raw)
  -s SIZE          virtual size, e.g. 10G (default: BASE's size); never shrinks IMAGE_FILE
  -c CLUSTER_SIZE  4K..2M, a power of two (default 64K)
${NAME_POLICY_USAGE}`,
  options: {
    b: { type: 'string', short: 'b' },
    F: { type: 'string', short: 'F' },
    i: { type: 'string', short: 'i' },
    s: { type: 'string', short: 's' },
    c: { type: 'string', short: 'c' },
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 1, max: 1, names: 'one OVERLAY' },
  async run({ values, positionals }, context) {
    const result = await createOverlay({
      overlay: positionals[0]!,
      ...(values.b !== undefined ? { backing: values.b } : {}),
      ...(values.F !== undefined ? { backingFormat: values.F } : {}),
      ...(values.i !== undefined ? { image: values.i } : {}),
      ...(values.s !== undefined ? { size: parseSize(values.s, 'size') } : {}),
      ...(values.c !== undefined ? { clusterSize: parseSize(values.c, 'cluster size') } : {}),
      policy: await policyFrom(context, values),
      signal: context.signal,
    })
    await context.library.trust(result.trust, 'created')
    if (result.baseFingerprint) await context.library.recordBaseFingerprint(result.baseFingerprint)
    await context.library.addImages([result.overlay])
    const base = result.backing
      ? `, backing_file=${values.b}, backing_fmt=${result.backingFormat}`
      : ''
    context.stdout.write(
      `Formatting '${positionals[0]}', fmt=add-cow size=${result.size} (${formatSize(result.size)}) cluster_size=${result.clusterSize}${base}, image_file=${result.image}${result.imageCreated ? '' : ' (existing)'}\n`,
    )
    return 0
  },
})
