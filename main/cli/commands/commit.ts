import { EngineError } from '../../engine/errors'
import { planCommit, type BlastRadius, type DependentImage } from '../../engine/ops/blast-radius'
import { commitOverlay, rollbackCommit } from '../../engine/ops/commit'
import { formatSize } from '../../engine/units'
import { defineCommand, type OutputStream } from '../command'
import {
  JSON_OPTION,
  OUTPUT_USAGE,
  NAME_POLICY_OPTIONS,
  NAME_POLICY_USAGE,
  policyFrom,
  PROGRESS_OPTION,
} from '../options'
import { progressBar } from '../progress'

/** One image of a blast radius, as a line: the image, and what it reads through. */
function dependentLine(image: DependentImage): string {
  const through = image.through.length > 2 ? ` (through ${image.through[1]})` : ''
  const why = image.dependsHow === 'unknown' && image.problem ? `: ${image.problem}` : ''
  return `  ${image.path}${through}${why}\n`
}

/** What `--dry-run` prints: every image whose guest view the commit would change. */
function describeRadius(radius: BlastRadius, ignoreUnchecked: boolean): string {
  const lines = [`Dry run: nothing was written.\n`]
  const doing = `Committing ${radius.overlay} into ${radius.base}`
  if (radius.dependents.length === 0) {
    lines.push(`${doing} would change the guest view of no other image.\n`)
  } else {
    lines.push(
      `${doing} would change the guest view of ${radius.dependents.length} other image(s):\n`,
      ...radius.dependents.map(dependentLine),
    )
  }
  if (radius.unchecked.length > 0) {
    lines.push(
      ignoreUnchecked
        ? `Could not be checked (ignored, as --ignore-unchecked asks):\n`
        : `Could not be checked (counted as changed unless --ignore-unchecked):\n`,
      ...radius.unchecked.map(dependentLine),
    )
  }
  for (const folder of radius.truncated) lines.push(`Not searched to the end: ${folder}\n`)
  return lines.join('')
}

/** `addcow commit`: an overlay's clusters into its base (journaled with --undo), or --rollback. */
export const commitCommand = defineCommand({
  name: 'commit',
  summary: "copy an overlay's clusters into its base (with undo), or roll a commit back",
  usage: `addcow commit [-p] [-d] [--force] [--ignore-unchecked] [--undo FILE] [--accept-base]
                     [--json] [--dry-run] OVERLAY
       addcow commit [-p] [--force] [--ignore-unchecked] [--json] --rollback FILE

  -p              show a progress bar
  -d              keep the overlay's contents (otherwise it is emptied afterwards)
  --force         commit even though other images read through the base (their guest
                  view changes); with --rollback: roll back even though the base changed
                  since, or other images read through it
  --ignore-unchecked
                  do not count the images that could not be checked (unreadable, or
                  naming no file this tool can check) as changed
  --dry-run       print the images whose guest view the commit would change, and write
                  nothing (qemu-img has no such option)
  --json          print the result (or, with --dry-run, the list) as JSON
${OUTPUT_USAGE}
  --undo FILE     save the base bytes the commit overwrites in FILE (a new file, or the
                  journal of the same interrupted commit), so it can be rolled back
  --rollback FILE put the base back as it was before the commit journaled in FILE, and give
                  the overlay its clusters back
  --accept-base   commit even though the base changed since its fingerprint was recorded
${NAME_POLICY_USAGE}

An interrupted commit is finished by running the same command again.`,
  options: {
    ...PROGRESS_OPTION,
    d: { type: 'boolean', short: 'd' },
    force: { type: 'boolean' },
    'ignore-unchecked': { type: 'boolean' },
    'dry-run': { type: 'boolean' },
    ...JSON_OPTION,
    undo: { type: 'string' },
    rollback: { type: 'string' },
    'accept-base': { type: 'boolean' },
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 0, max: 1, names: 'one OVERLAY (or --rollback FILE)' },
  async run({ values, positionals }, context) {
    const policy = await policyFrom(context, values)
    const ignoreUnchecked = values['ignore-unchecked'] ?? false
    const bar = progressBar(
      context.stderr,
      values.rollback ? 'Rolling back' : 'Committing',
      values.p ?? false,
    )
    if (values.rollback !== undefined) {
      if (
        positionals.length > 0 ||
        values.undo !== undefined ||
        values.d ||
        values['dry-run'] !== undefined
      ) {
        throw new EngineError(
          'BAD_ARGUMENT',
          'addcow commit --rollback FILE takes no OVERLAY, -d, --undo or --dry-run.',
          { field: '--rollback' },
        )
      }
      const result = await rollbackCommit({
        journal: values.rollback,
        force: values.force ?? false,
        ignoreUnchecked,
        library: context.library,
        policy,
        signal: context.signal,
        onProgress: bar.update,
      })
      bar.finish()
      if (values.json) {
        context.stdout.write(JSON.stringify(result, null, 4) + '\n')
        return 0
      }
      warnChanged(context.stderr, result.dependents, result.base)
      context.stdout.write(
        result.alreadyDone
          ? `The commit in ${values.rollback} was already rolled back.\n`
          : `Commit rolled back: ${formatSize(result.restoredBytes)} of ${result.base} restored${result.overlayClusters > 0 ? `, ${result.overlayClusters} cluster(s) given back to ${result.overlay}` : ''}.\n`,
      )
      return 0
    }
    if (positionals.length !== 1) {
      throw new EngineError(
        'BAD_ARGUMENT',
        "addcow commit expects one OVERLAY; got none. Try 'addcow help commit'.",
      )
    }
    if (values['dry-run']) {
      const radius = await planCommit({
        overlay: positionals[0]!,
        library: context.library,
        policy,
        signal: context.signal,
      })
      context.stdout.write(
        values.json
          ? JSON.stringify(
              { ...radius, unchecked: ignoreUnchecked ? [] : radius.unchecked },
              null,
              4,
            ) + '\n'
          : describeRadius(radius, ignoreUnchecked),
      )
      return 0
    }
    const result = await commitOverlay({
      overlay: positionals[0]!,
      keep: values.d ?? false,
      force: values.force ?? false,
      ignoreUnchecked,
      acceptBase: values['accept-base'] ?? false,
      ...(values.undo !== undefined ? { undo: values.undo } : {}),
      library: context.library,
      policy,
      signal: context.signal,
      onProgress: bar.update,
    })
    bar.finish()
    if (values.json) {
      context.stdout.write(JSON.stringify(result, null, 4) + '\n')
      return 0
    }
    warnChanged(context.stderr, result.dependents, result.base)
    for (const image of result.unchecked) {
      context.stderr.write(
        `addcow commit: warning: ${image.path} could not be checked; its guest view may have changed (${image.problem ?? 'unknown'}).\n`,
      )
    }
    const details = [
      `${result.clusters} cluster(s), ${formatSize(result.bytes)}, copied into ${result.base} (${result.baseFormat})`,
      result.grewBase
        ? `the base grew from ${result.grewBase[0]} to ${result.grewBase[1]} bytes`
        : null,
      result.emptied ? 'the overlay was emptied' : 'the overlay was kept',
      result.undo ? `undo journal: ${result.undo}${result.resumed ? ' (resumed)' : ''}` : null,
    ].filter((part) => part !== null)
    context.stdout.write(`Image committed.\n${details.join('; ')}.\n`)
    return 0
  },
})

/** One warning per image whose guest view changed with the base. */
function warnChanged(stderr: OutputStream, dependents: DependentImage[], base: string): void {
  for (const dependent of dependents) {
    const through = dependent.through.length > 2 ? `, through ${dependent.through[1]}` : ''
    stderr.write(
      `addcow commit: warning: the guest view of ${dependent.path} changed (it reads through ${base}${through}).\n`,
    )
  }
}
