import { EngineError } from '../../engine/errors'
import { resetOverlay, type ResetResult } from '../../engine/ops/reset'
import { formatSize } from '../../engine/units'
import { defineCommand } from '../command'
import {
  JSON_OPTION,
  NAME_POLICY_OPTIONS,
  NAME_POLICY_USAGE,
  OUTPUT_USAGE,
  policyFrom,
} from '../options'

/** What the overlay holds, in words: what a reset throws away. */
function describeLoss(result: ResetResult): string {
  const what = result.wasFlattened
    ? `it is flattened, so all ${result.clusters} of its clusters (${formatSize(result.bytes)}) are its own`
    : `${result.clusters} cluster(s), ${formatSize(result.bytes)} of guest data written in it`
  return `${result.overlay}: ${what}; it would read ${result.base} again`
}

/** `addcow reset`: empty an overlay so it reads its base again (names kept). */
export const resetCommand = defineCommand({
  name: 'reset',
  summary: 'throw away what an overlay holds: it reads its base again, names kept',
  usage: `addcow reset [--yes] [--json] OVERLAY

  -y, --yes       do it; without it reset changes nothing, says what would be lost
                  and exits 1
  --json          print what was (or would be) thrown away as JSON
${OUTPUT_USAGE}
${NAME_POLICY_USAGE}

Empties the overlay as if it had just been created on its base: every cluster written in it
is given back to the base, and its image file's blocks are freed. The overlay keeps its names
(base, image file, formats) and its files. qemu-img has no such command (its users re-create
the overlay with 'qemu-img create -b'); the opposite, keeping the data after a commit, is
'addcow commit -d'. Refused while the overlay is in use (served, or a VM runs on it) and
while other images use it as their base.`,
  options: {
    y: { type: 'boolean', short: 'y' },
    yes: { type: 'boolean' },
    ...JSON_OPTION,
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 1, max: 1, names: 'one OVERLAY' },
  async run({ values, positionals }, context) {
    const confirmed = values.yes ?? values.y ?? false
    const result = await resetOverlay({
      overlay: positionals[0]!,
      policy: await policyFrom(context, values),
      library: context.library,
      dryRun: !confirmed,
      signal: context.signal,
    })
    if (values.json) {
      context.stdout.write(JSON.stringify(result, null, 4) + '\n')
      return confirmed ? 0 : 1
    }
    if (!confirmed) {
      throw new EngineError(
        'CONFIRMATION_REQUIRED',
        `${describeLoss(result)}. Nothing was changed; run 'addcow reset --yes ${result.overlay}' to throw that away.`,
        { path: result.overlay, field: 'yes' },
      )
    }
    context.stdout.write(
      `Reset ${result.overlay}: ${result.clusters} cluster(s) (${formatSize(result.bytes)}) thrown away (${result.emptiedBy === 'punched' ? 'holes punched' : 'zeros written'} in ${result.image}); it reads ${result.base} again.\n`,
    )
    return 0
  },
})
