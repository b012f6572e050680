import { basename, dirname } from 'node:path'
import { EngineError } from '../engine/errors'
import { openImage } from '../engine/open'
import { findDependents } from '../engine/ops/blast-radius'
import { checkExitCode, checkImage } from '../engine/ops/check'
import { commitOverlay, rollbackCommit } from '../engine/ops/commit'
import { rebaseOverlay } from '../engine/ops/rebase'
import { streamOverlay } from '../engine/ops/stream'
import type { IpcServices } from './create-handlers'
import type { Handlers } from './handlers'

/** The channels of the operations that change or judge an overlay. */
export type OperationChannel =
  | 'image:check-image'
  | 'image:get-blast-radius'
  | 'image:commit-overlay'
  | 'image:rollback-commit'
  | 'image:stream-overlay'
  | 'image:rebase-overlay'

/**
 * check, commit (with its blast radius and its rollback), stream and rebase as IPC handlers
 * over the engine's operations: the same code as the CLI, the library's name policy and base
 * fingerprints, and the job's signal and progress.
 */
export function createOperationHandlers(services: IpcServices): Pick<Handlers, OperationChannel> {
  const { library, bus } = services
  const policy = () => library.policy()
  const changed = (paths: string[]): void =>
    bus.emit('library:changed', { reason: 'modified', paths })

  return {
    'image:check-image': {
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
        return { report, exitCode: checkExitCode(report) }
      },
    },

    'image:get-blast-radius': async ({ overlay }) => {
      const disk = await openImage(overlay, { readOnly: true, policy: await policy() })
      let base: string
      try {
        if (!disk.backing) {
          throw new EngineError(
            'BAD_ARGUMENT',
            `${overlay} has no backing file, so a commit has nowhere to go.`,
            {
              path: overlay,
              field: 'backing',
            },
          )
        }
        base = disk.backing.path
      } finally {
        await disk.close()
      }
      return findDependents(base, { library, folders: [dirname(overlay)], exclude: [overlay] })
    },

    'image:commit-overlay': {
      unit: 'bytes',
      title: ({ overlay }) => `Commit ${basename(overlay)} into its base`,
      async run({ overlay, keep, force, acceptBase, undo }, job) {
        const result = await commitOverlay({
          overlay,
          keep,
          force,
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

    'image:rollback-commit': {
      unit: 'bytes',
      title: ({ journal }) => `Roll back the commit in ${basename(journal)}`,
      async run({ journal, force }, job) {
        const result = await rollbackCommit({
          journal,
          force,
          library,
          policy: await policy(),
          signal: job.signal,
          onProgress: job.progress,
        })
        if (!result.alreadyDone) changed([result.overlay, result.base])
        return result
      },
    },

    'image:stream-overlay': {
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

    'image:rebase-overlay': {
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
  }
}
