import { resolve } from 'node:path'
import {
  liveJobSchema,
  liveSnapshotResultSchema,
  liveStatusSchema,
  type LiveJob,
  type LiveStatus,
} from '../../../shared/live-control'
import { EngineError } from '../../engine/errors'
import { defaultControlPath, sendControlRequest } from '../../engine/live/control'
import { formatSize } from '../../engine/units'
import { defineCommand, type CommandContext } from '../command'
import { JSON_OPTION, OUTPUT_USAGE } from '../options'

const USAGE = `addcow job status [--json] [ID]      the export: its chain now, its URI, its jobs
                                      (with ID: that job)
addcow job list [--json]              the live jobs: running, and the last finished
addcow job snapshot [--name FILE] [--json]
                                      freeze the served top and serve a new empty
                                      overlay on it (default <top>-snapN.add-cow)
addcow job cancel ID                  stop a running live job

Each talks to a running 'addcow serve' or 'addcow launch' through its control socket:

  --control-socket PATH   the socket it printed at start
  --image IMAGE           the image it was started on (finds its default socket)
  --name FILE             (snapshot) the new top's file; relative to the working folder
  --json                  print JSON
${OUTPUT_USAGE}`

/** `addcow job`: live operations on a running export, through its control socket. */
export const jobCommand = defineCommand({
  name: 'job',
  summary: 'snapshot a running export, list and cancel its live jobs',
  usage: USAGE,
  options: {
    'control-socket': { type: 'string' },
    image: { type: 'string' },
    name: { type: 'string' },
    ...JSON_OPTION,
  },
  positionals: { min: 1, max: 2, names: 'an action (status, list, snapshot, cancel) and its ID' },
  async run({ values, positionals }, context) {
    const [action, id] = positionals
    const socket = controlSocketOf(values)
    const ask = (command: string, args: Record<string, unknown> = {}): Promise<unknown> =>
      sendControlRequest(socket, command, args, { signal: context.signal })
    const takes = (wanted: boolean): void => {
      if ((id !== undefined) !== wanted)
        throw new EngineError(
          'BAD_ARGUMENT',
          `addcow job ${action} takes ${wanted ? 'one job ID' : 'no ID'}.`,
          { field: 'arguments' },
        )
    }
    if (values.name !== undefined && action !== 'snapshot')
      throw new EngineError('BAD_ARGUMENT', '--name goes with addcow job snapshot.', {
        field: 'name',
      })
    switch (action) {
      case 'status': {
        if (id !== undefined)
          return print(context, values.json, parseJob(await ask('job-status', { id })), describeJob)
        return print(
          context,
          values.json,
          liveStatusSchema.parse(await ask('status')),
          describeStatus,
        )
      }
      case 'list': {
        takes(false)
        const jobs = liveJobSchema.array().parse(await ask('jobs'))
        return print(context, values.json, jobs, (list) =>
          list.length === 0 ? 'No live jobs.' : list.map(describeJob).join('\n'),
        )
      }
      case 'snapshot': {
        takes(false)
        const args = values.name !== undefined ? { name: resolve(values.name) } : {}
        const result = liveSnapshotResultSchema.parse(await ask('snapshot', args))
        return print(
          context,
          values.json,
          result,
          ({ top, frozen, pauseMs }) =>
            `The export now writes to ${top}.\n${frozen} is frozen (read-only; copy it with addcow convert or qemu-img). Guest requests were held ${pauseMs} ms.`,
        )
      }
      case 'cancel': {
        takes(true)
        const job = parseJob(await ask('job-cancel', { id }))
        return print(context, values.json, job, (cancelled) =>
          cancelled.state === 'running'
            ? `Asked ${cancelled.id} to stop; addcow job status ${cancelled.id} shows when it has.`
            : `${cancelled.id} is not running (${cancelled.state}).`,
        )
      }
      default:
        throw new EngineError(
          'BAD_ARGUMENT',
          `addcow job takes status, list, snapshot or cancel, not '${action}'.`,
          { field: 'action', value: action },
        )
    }
  },
})

/** The control socket named by --control-socket, or the default one of --image. */
function controlSocketOf(values: { 'control-socket'?: string; image?: string }): string {
  const given = values['control-socket']
  if (given !== undefined && values.image !== undefined)
    throw new EngineError('BAD_ARGUMENT', 'Give --control-socket or --image, not both.', {
      field: 'control-socket',
    })
  if (given !== undefined) return resolve(given)
  if (values.image !== undefined) return defaultControlPath(values.image)
  throw new EngineError(
    'BAD_ARGUMENT',
    'addcow job needs the export: --control-socket PATH (printed by addcow serve) or --image IMAGE.',
    { field: 'control-socket' },
  )
}

function parseJob(value: unknown): LiveJob {
  return liveJobSchema.parse(value)
}

function print<T>(
  context: CommandContext,
  json: boolean | undefined,
  value: T,
  describe: (value: T) => string,
): number {
  context.stdout.write(json ? `${JSON.stringify(value, null, 4)}\n` : `${describe(value)}\n`)
  return 0
}

/** One line per job: id, state, progress, what it does. */
function describeJob(job: LiveJob): string {
  const progress =
    job.total > 0
      ? ` ${formatSize(job.done)} of ${formatSize(job.total)} (${Math.floor((100 * job.done) / job.total)}%)`
      : ''
  const detail = job.error ? `: ${job.error.message}` : job.detail ? `: ${job.detail}` : ''
  return `${job.id}  ${job.state}${progress}${detail}`
}

function describeStatus(status: LiveStatus): string {
  const lines = [
    `Serving ${status.top} (${status.format}, ${formatSize(status.size)}, ${status.readOnly ? 'read-only' : 'read-write'}${status.copyOnRead ? ', copy-on-read' : ''}) in process ${status.pid}.`,
  ]
  if (status.uri) lines.push(`URI: ${status.uri}`)
  lines.push(
    'Chain:',
    ...status.chain.map((path, depth) => `  ${depth === 0 ? 'top ' : 'base'} ${path}`),
  )
  if (status.swaps > 0) lines.push(`The top was replaced ${status.swaps} time(s) since the start.`)
  lines.push(
    ...(status.jobs.length > 0
      ? ['Jobs:', ...status.jobs.map((job) => `  ${describeJob(job)}`)]
      : []),
  )
  return lines.join('\n')
}
