import { upgradeDraft, DRAFT_LAYOUTS } from '../../engine/ops/upgrade'
import { parseSize } from '../../engine/units'
import { EngineError } from '../../engine/errors'
import { defineCommand } from '../command'
import { progressBar } from '../progress'
import {
  FORMAT_OPTION,
  NAME_POLICY_OPTIONS,
  NAME_POLICY_USAGE,
  policyFrom,
  PROGRESS_OPTION,
} from '../options'

/** `addcow amend --upgrade`: rewrite an earlier add-cow draft in the current layout. */
export const amendCommand = defineCommand({
  name: 'amend',
  summary: 'upgrade an add-cow file in an earlier draft layout to the current one',
  usage: `addcow amend --upgrade [-o NEW] [-c CLUSTER_SIZE] [--keep-old] [-f FMT] [-p] IMAGE

  --upgrade         rewrite IMAGE (${DRAFT_LAYOUTS.join(', ')}) in the current layout
  -o NEW            write the upgraded file to NEW (must not exist); IMAGE is left as it is
  -c CLUSTER_SIZE   cluster size of the new file, 4K..2M (default: the draft's, or 64K where
                    the draft counts 512-byte sectors or clusters below 4K)
  --keep-old        in place: keep the draft file as IMAGE.old
  -f FMT            the draft layout (default: probed)
  -p                show progress
${NAME_POLICY_USAGE}

In place, the new file is written beside IMAGE, synced, then renamed over it, so IMAGE is
always either the complete draft or the complete upgrade. Where the new clusters are larger than
the draft's (sector-based drafts), partly written clusters are completed from the backing file
into the image file first; the guest view does not change. Old layouts are never written.`,
  options: {
    upgrade: { type: 'boolean' },
    o: { type: 'string', short: 'o' },
    c: { type: 'string', short: 'c' },
    'keep-old': { type: 'boolean' },
    ...FORMAT_OPTION,
    ...PROGRESS_OPTION,
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 1, max: 1, names: 'one IMAGE' },
  async run({ values, positionals }, context) {
    if (!values.upgrade) {
      throw new EngineError(
        'BAD_ARGUMENT',
        "addcow amend: only --upgrade is supported. Try 'addcow help amend'.",
        {
          field: 'upgrade',
        },
      )
    }
    if (values['keep-old'] && values.o !== undefined) {
      throw new EngineError(
        'BAD_ARGUMENT',
        'addcow amend: --keep-old applies to an upgrade in place, not with -o.',
        {
          field: 'keep-old',
        },
      )
    }
    const progress = progressBar(context.stderr, 'Upgrading', values.p ?? false)
    const result = await upgradeDraft({
      path: positionals[0]!,
      ...(values.o !== undefined ? { output: values.o } : {}),
      ...(values.c !== undefined ? { clusterSize: parseSize(values.c, 'cluster size') } : {}),
      ...(values.f !== undefined ? { format: values.f } : {}),
      keepOld: values['keep-old'] ?? false,
      policy: await policyFrom(context, values),
      signal: context.signal,
      onProgress: progress.update,
    })
    progress.finish()
    await context.library.trust(result.trust, 'created')
    await context.library.addImages([result.path])
    const filled =
      result.filledClusters > 0
        ? `, ${result.filledClusters} partly written clusters completed from the backing file`
        : ''
    const kept = result.backup ? `; the draft is kept as ${result.backup}` : ''
    context.stdout.write(
      `Upgraded ${positionals[0]} (${result.layout}) to the current add-cow layout: ${result.path}, cluster_size=${result.clusterSize}, size=${result.size}${filled}${kept}.\n`,
    )
    return 0
  },
})
