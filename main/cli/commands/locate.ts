import { EngineError } from '../../engine/errors'
import { locateBase } from '../../engine/ops/locate'
import { defineCommand } from '../command'
import { NAME_POLICY_OPTIONS, NAME_POLICY_USAGE, policyFrom } from '../options'

/** `addcow locate`: relink an overlay whose base moved, after checking it is the same base. */
export const locateCommand = defineCommand({
  name: 'locate',
  summary: 'point an overlay at its moved base, after checking size and fingerprint',
  usage: `addcow locate [-F FMT] [--force] -b BASE OVERLAY

  -b BASE         where the overlay's base is now
  -F FMT          its format (default: the format the overlay records; never probed)
  --force         relink although the size or the sampled content differ
${NAME_POLICY_USAGE}

Like 'addcow rebase -u -b BASE OVERLAY', but first checks that BASE is the overlay's base:
its size must equal the recorded one (or, with no fingerprint recorded, the overlay's), and
when a fingerprint was recorded, its sampled content must match. The name is stored relative
when BASE lies in the overlay's folder, absolute otherwise; the base is trusted and its
fingerprint recorded.`,
  options: {
    b: { type: 'string', short: 'b' },
    F: { type: 'string', short: 'F' },
    force: { type: 'boolean' },
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 1, max: 1, names: 'one OVERLAY' },
  async run({ values, positionals }, context) {
    if (values.b === undefined || values.b === '') {
      throw new EngineError('BAD_ARGUMENT', 'addcow locate needs the base: -b BASE.', {
        field: '-b',
      })
    }
    const result = await locateBase({
      overlay: positionals[0]!,
      base: values.b,
      ...(values.F !== undefined ? { format: values.F } : {}),
      force: values.force ?? false,
      library: context.library,
      policy: await policyFrom(context, values),
    })
    const checked =
      result.fingerprint === 'matched'
        ? 'size and fingerprint match'
        : result.fingerprint === 'not-recorded'
          ? 'size matches; no fingerprint was recorded, so the content was not compared'
          : `forced: ${result.size === result.expectedSize ? 'the size matches but ' : ''}the content differs from the recorded fingerprint`
    context.stdout.write(
      `${result.overlay} now uses ${result.base} (${result.format}), stored as '${result.stored}'${result.relative ? ' (relative)' : ''}; ${checked}.\n`,
    )
    return 0
  },
})
