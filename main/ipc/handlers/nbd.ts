import { basename } from 'node:path'
import { EngineError } from '../../engine/errors'
import { defaultSocketPath } from '../../nbd/default-socket'
import { startExport } from '../../nbd/start-export'
import type { AreaHandlers } from '../handler-table'
import type { IpcServices } from '../services'
import { stopSession, untilAborted } from '../sessions'
import { guardBaseDrift } from '../../engine/ops/drift'

/**
 * `nbd:*`: NBD exports (`addcow serve`) as long-lived jobs. An export's job runs until it is
 * stopped: its detail line carries the NBD URI, and stopping it (cancelling the job) lets the
 * requests in flight finish, flushes and closes the image, and ends the job as done.
 */
export function nbdHandlers(services: IpcServices): AreaHandlers<'nbd'> {
  const { library, jobs, images } = services

  return {
    'nbd:serve-image': {
      unit: 'steps',
      title: ({ path }) => `Serve ${basename(path)} over NBD`,
      async run({ path, socket, port, exportName, readOnly, acceptBase }, job) {
        if (socket !== undefined && port !== undefined) {
          throw new EngineError(
            'BAD_ARGUMENT',
            'Serve on a Unix socket or on a TCP port, not both.',
            { field: 'port' },
          )
        }
        const handle = await startExport({
          image: path,
          readOnly,
          policy: await library.policy(),
          exportName,
          // The app serves on loopback only; a network export needs TLS, which the CLI sets up.
          listen:
            port !== undefined
              ? { host: '127.0.0.1', port }
              : { socket: socket ?? defaultSocketPath(path) },
          checks: [
            async (disk) => {
              await guardBaseDrift(disk, { library, acceptBase, doing: 'serve it' })
            },
          ],
          signal: job.signal,
        })
        // The map channels read this image through the export's disk while it is served.
        const unserved = images.serving(handle.disk)
        try {
          job.describe(handle.uri)
          await untilAborted(job.signal)
        } finally {
          unserved()
          await handle.stop()
        }
        return { uri: handle.uri }
      },
    },

    'nbd:stop-export': async ({ jobId }) => stopSession(jobs, jobId, 'nbd:serve-image'),
  }
}
