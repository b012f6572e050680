import { basename } from 'node:path'
import { openImage } from '../../engine/open'
import { checkExitCode, checkImage } from '../../engine/ops/check'
import { commitOverlay, rollbackCommit } from '../../engine/ops/commit'
import { compareDisks } from '../../engine/ops/compare'
import { createOverlay } from '../../engine/ops/create'
import { rebaseOverlay } from '../../engine/ops/rebase'
import { resetOverlay } from '../../engine/ops/reset'
import { streamOverlay } from '../../engine/ops/stream'
import { appWording } from '../errors'
import type { AreaHandlers } from '../handler-table'
import type { IpcServices } from '../services'

/**
 * `operations:*`: the engine's operations as jobs (progress, cancel, a final result): create,
 * compare, check (and repair), commit and its rollback, stream (flatten), rebase and reset. The same
 * code as the CLI's commands, with the library's name policy and base fingerprints; what an
 * operation creates is trusted and joins the library, what it changes is announced as
 * `library:changed`.
 */
export function operationHandlers(services: IpcServices): AreaHandlers<'operations'> {
  const { library, bus } = services
  const policy = () => library.policy()
  const changed = (paths: string[]): void =>
    bus.emit('library:changed', { reason: 'modified', paths })

  return {
    'operations:create-overlay': {
      unit: 'steps',
      title: ({ overlay }) => `Create overlay ${basename(overlay)}`,
      async run(request, job) {
        const result = await createOverlay({
          ...request,
          policy: await policy(),
          signal: job.signal,
          onProgress: job.progress,
        })
        await library.trust(result.trust, 'created')
        if (result.baseFingerprint) await library.recordBaseFingerprint(result.baseFingerprint)
        await library.addImages([result.overlay])
        bus.emit('library:changed', { reason: 'created', paths: [result.overlay] })
        return {
          overlay: result.overlay,
          image: result.image,
          imageCreated: result.imageCreated,
          backing: result.backing,
          backingFormat: result.backingFormat,
          size: result.size,
          clusterSize: result.clusterSize,
        }
      },
    },

    'operations:compare-images': {
      unit: 'bytes',
      title: ({ a, b }) => `Compare ${basename(a)} with ${basename(b)}`,
      async run({ a, b }, job) {
        const currentPolicy = await policy()
        const first = await openImage(a, { readOnly: true, policy: currentPolicy })
        try {
          const second = await openImage(b, { readOnly: true, policy: currentPolicy })
          try {
            return await compareDisks(first, second, {
              signal: job.signal,
              onProgress: job.progress,
            })
          } finally {
            await second.close()
          }
        } finally {
          await first.close()
        }
      },
    },

    'operations:check-image': {
      unit: 'bytes',
      title: ({ path, repair }) => `${repair ? 'Check and repair' : 'Check'} ${basename(path)}`,
      async run({ path, repair, acceptBase }, job) {
        const report = await checkImage(path, {
          ...(repair ? { repair } : {}),
          policy: await policy(),
          library,
          acceptBase,
          signal: job.signal,
          onProgress: job.progress,
        })
        if (report.repairs.length > 0) changed([path])
        const worded = {
          ...report,
          problems: report.problems.map((problem) => ({
            ...problem,
            message: appWording(problem.message),
          })),
        }
        return { report: worded, exitCode: checkExitCode(report) }
      },
    },

    'operations:commit-overlay': {
      unit: 'bytes',
      title: ({ overlay }) => `Commit ${basename(overlay)} into its base`,
      async run({ overlay, keep, force, ignoreUnchecked, acceptBase, undo }, job) {
        const result = await commitOverlay({
          overlay,
          keep,
          force,
          ignoreUnchecked,
          acceptBase,
          ...(undo !== undefined ? { undo } : {}),
          library,
          policy: await policy(),
          signal: job.signal,
          onProgress: job.progress,
        })
        changed([result.overlay, result.base])
        return result
      },
    },

    'operations:rollback-commit': {
      unit: 'bytes',
      title: ({ journal }) => `Roll back the commit in ${basename(journal)}`,
      async run({ journal, force, ignoreUnchecked }, job) {
        const result = await rollbackCommit({
          journal,
          force,
          ignoreUnchecked,
          library,
          policy: await policy(),
          signal: job.signal,
          onProgress: job.progress,
        })
        if (!result.alreadyDone) changed([result.overlay, result.base])
        return result
      },
    },

    'operations:stream-overlay': {
      unit: 'bytes',
      title: ({ overlay }) => `Flatten ${basename(overlay)}`,
      async run({ overlay, acceptBase }, job) {
        const result = await streamOverlay({
          overlay,
          library,
          acceptBase,
          policy: await policy(),
          signal: job.signal,
          onProgress: job.progress,
        })
        changed([result.overlay])
        return result
      },
    },

    'operations:rebase-overlay': {
      unit: 'bytes',
      title: ({ overlay, backing }) =>
        backing === ''
          ? `Detach ${basename(overlay)} from its base`
          : `Rebase ${basename(overlay)} onto ${basename(backing)}`,
      async run({ overlay, backing, backingFormat, unsafe, acceptBase }, job) {
        const result = await rebaseOverlay({
          overlay,
          backing,
          ...(backingFormat !== undefined ? { backingFormat } : {}),
          unsafe,
          acceptBase,
          library,
          policy: await policy(),
          signal: job.signal,
          onProgress: job.progress,
        })
        await library.trust(result.trust, 'created')
        changed([result.overlay])
        return {
          overlay: result.overlay,
          oldBacking: result.oldBacking,
          newBacking: result.newBacking,
          newBackingPath: result.newBackingPath,
          newBackingFormat: result.newBackingFormat,
          copiedClusters: result.copiedClusters,
          comparedBytes: result.comparedBytes,
          unsafe: result.unsafe,
        }
      },
    },

    'operations:reset-overlay': {
      unit: 'steps',
      title: ({ overlay }) => `Reset ${basename(overlay)} to its base`,
      async run({ overlay, dryRun }, job) {
        const result = await resetOverlay({
          overlay,
          dryRun,
          library,
          policy: await policy(),
          signal: job.signal,
        })
        if (!dryRun) changed([result.overlay])
        return result
      },
    },
  }
}
