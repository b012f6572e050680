import { rebaseOverlay } from '../../engine/ops/rebase'
import { EngineError } from '../../engine/errors'
import { defineCommand } from '../command'
import { NAME_POLICY_OPTIONS, NAME_POLICY_USAGE, policyFrom, PROGRESS_OPTION } from '../options'
import { progressBar } from '../progress'

/** `addcow rebase`: point an overlay at another base (safe: copies what differs; -u: names only). */
export const rebaseCommand = defineCommand({
  name: 'rebase',
  summary: 'point an overlay at another base (safe: the guest view stays the same)',
  usage: `addcow rebase [-p] [-u] -b NEW_BASE [-F FMT] [--accept-base] OVERLAY

  -b NEW_BASE     the new backing file, stored as given (relative to OVERLAY's folder);
                  '' detaches the overlay from any base
  -F FMT          format of NEW_BASE (default: probed from it)
  -u              unsafe: rewrite the name only (to fix a base that was moved or renamed)
  -p              show a progress bar
  --accept-base   go on although the old base changed since its fingerprint was recorded
${NAME_POLICY_USAGE}

Safe mode copies into the overlay every cluster where the old and the new base differ, so
the guest view does not change. Both modes keep the header byte-exact.`,
  options: {
    b: { type: 'string', short: 'b' },
    F: { type: 'string', short: 'F' },
    u: { type: 'boolean', short: 'u' },
    ...PROGRESS_OPTION,
    'accept-base': { type: 'boolean' },
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 1, max: 1, names: 'one OVERLAY' },
  async run({ values, positionals }, context) {
    if (values.b === undefined) {
      throw new EngineError(
        'BAD_ARGUMENT',
        "addcow rebase needs the new base: -b NEW_BASE (or -b '' to detach).",
        { field: '-b' },
      )
    }
    const bar = progressBar(context.stderr, 'Rebasing', values.p ?? false)
    const result = await rebaseOverlay({
      overlay: positionals[0]!,
      backing: values.b,
      ...(values.F !== undefined ? { backingFormat: values.F } : {}),
      unsafe: values.u ?? false,
      acceptBase: values['accept-base'] ?? false,
      library: context.library,
      policy: await policyFrom(context, values),
      signal: context.signal,
      onProgress: bar.update,
    })
    bar.finish()
    await context.library.trust(result.trust, 'approved')
    const target =
      result.newBacking === null ? 'no base' : `${result.newBacking} (${result.newBackingFormat})`
    context.stdout.write(
      result.unsafe
        ? `Rebased ${result.overlay} onto ${target} (names only).\n`
        : `Rebased ${result.overlay} onto ${target}: ${result.copiedClusters} cluster(s) that differ were copied into the overlay.\n`,
    )
    return 0
  },
})
