import { EngineError } from '../../engine/errors'
import { commitOverlay, rollbackCommit } from '../../engine/ops/commit'
import { formatSize } from '../../engine/units'
import { defineCommand } from '../command'
import { NAME_POLICY_OPTIONS, NAME_POLICY_USAGE, policyFrom, PROGRESS_OPTION } from '../options'
import { progressBar } from '../progress'

/** `addcow commit`: an overlay's clusters into its base (journaled with --undo), or --rollback. */
export const commitCommand = defineCommand({
  name: 'commit',
  summary: "copy an overlay's clusters into its base (with undo), or roll a commit back",
  usage: `addcow commit [-p] [-d] [--force] [--undo FILE] [--accept-base] OVERLAY
       addcow commit [-p] [--force] --rollback FILE

  -p              show a progress bar
  -d              keep the overlay's contents (otherwise it is emptied afterwards)
  --force         commit even though other images use the same base (their guest view
                  changes); with --rollback: roll back even though the base changed since
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
    undo: { type: 'string' },
    rollback: { type: 'string' },
    'accept-base': { type: 'boolean' },
    ...NAME_POLICY_OPTIONS,
  },
  positionals: { min: 0, max: 1, names: 'one OVERLAY (or --rollback FILE)' },
  async run({ values, positionals }, context) {
    const policy = await policyFrom(context, values)
    const bar = progressBar(
      context.stderr,
      values.rollback ? 'Rolling back' : 'Committing',
      values.p ?? false,
    )
    if (values.rollback !== undefined) {
      if (positionals.length > 0 || values.undo !== undefined || values.d) {
        throw new EngineError(
          'BAD_ARGUMENT',
          'addcow commit --rollback FILE takes no OVERLAY, -d or --undo.',
          { field: '--rollback' },
        )
      }
      const result = await rollbackCommit({
        journal: values.rollback,
        force: values.force ?? false,
        library: context.library,
        policy,
        signal: context.signal,
        onProgress: bar.update,
      })
      bar.finish()
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
    const result = await commitOverlay({
      overlay: positionals[0]!,
      keep: values.d ?? false,
      force: values.force ?? false,
      acceptBase: values['accept-base'] ?? false,
      ...(values.undo !== undefined ? { undo: values.undo } : {}),
      library: context.library,
      policy,
      signal: context.signal,
      onProgress: bar.update,
    })
    bar.finish()
    for (const dependent of result.dependents) {
      context.stderr.write(
        `addcow commit: warning: the guest view of ${dependent.path} changed (it uses ${result.base} too).\n`,
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
