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
import { liveJobStartedSchema } from '../../../shared/live-copy-jobs'
import { parseSize } from '../../engine/units'
import { progressBar } from '../progress'
import { JSON_OPTION, OUTPUT_USAGE, PROGRESS_OPTION } from '../options'

const USAGE = `addcow job status [--json] [ID]      the export: its chain now, its URI, its jobs
                                      (with ID: that job)
addcow job list [--json]              the live jobs: running, and the last finished
addcow job snapshot [--name FILE] [--json]
                                      freeze the served top and serve a new empty
                                      overlay on it (default <top>-snapN.add-cow)
addcow job flatten [--rate SIZE] [--detach] [-p] [--json]
                                      copy what the served top reads from its
                                      chain into it while the guest writes; at the
                                      end the export reads only its image file
addcow job commit [--layer N] [--rate SIZE] [--force] [--ignore-unchecked]
                  [--undo FILE] [--detach] [-p] [--json]
                                      commit layer N of the served chain into the
                                      layer below it (0, the default: the served
                                      top itself; the export then serves its base)
addcow job cancel ID                  stop a running live job

Each talks to a running 'addcow serve' or 'addcow launch' through its control socket:

  --control-socket PATH   the socket it printed at start
  --image IMAGE           the image it was started on (finds its default socket)
  --name FILE             (snapshot) the new top's file; relative to the working folder
  --rate SIZE             (flatten, commit) bytes per second at most (e.g. 64M)
  --layer N               (commit) depth of the layer to commit: 0 the top, 1 below it
  --force                 (commit) go on although other images read through the base
  --ignore-unchecked      (commit) do not count images that could not be checked
  --undo FILE             (commit) keep an undo journal of the base bytes it
                          overwrites (resumed when it exists): after a crash,
                          'addcow commit --rollback FILE' puts the base back and
                          'addcow commit --undo FILE OVERLAY' finishes the commit
  --detach                (flatten, commit) print the job's ID and return at once
  -p                      (flatten, commit) show a progress bar while waiting
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
    rate: { type: 'string' },
    layer: { type: 'string' },
    force: { type: 'boolean' },
    'ignore-unchecked': { type: 'boolean' },
    undo: { type: 'string' },
    detach: { type: 'boolean' },
    ...PROGRESS_OPTION,
    ...JSON_OPTION,
  },
  positionals: {
    min: 1,
    max: 2,
    names: 'an action (status, list, snapshot, flatten, commit, cancel) and its ID',
  },
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
    assertCopyOptions(action ?? '', values)
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
          ({ top, frozen, pauseMs, warning }) =>
            `The export now writes to ${top}.\n${frozen} is frozen (read-only; copy it with addcow convert or qemu-img). Guest requests were held ${pauseMs} ms.${warning ? `\nWarning: ${warning}` : ''}`,
        )
      }
      case 'flatten':
      case 'commit': {
        takes(false)
        const args = action === 'flatten' ? flattenArgs(values) : commitArgs(values)
        // Not cut short by Ctrl-C: the job it starts would run on unseen; followJob cancels it.
        const { id: started } = liveJobStartedSchema.parse(
          await sendControlRequest(socket, action, args),
        )
        if (values.detach) {
          return print(
            context,
            values.json,
            { id: started },
            () => `Started ${started}; follow it with addcow job status ${started}.`,
          )
        }
        const job = await followJob(socket, started, context, values.p ?? false)
        if (job.state === 'cancelled') {
          // Not an error of the job: it stopped where it was asked to, its files consistent.
          if (values.json) context.stdout.write(`${JSON.stringify(job, null, 4)}\n`)
          context.stderr.write(`addcow job: ${describeCancelled(job)}\n`)
          return 1
        }
        return print(context, values.json, job, describeEnd)
      }
      case 'cancel': {
        takes(true)
        const asked = parseJob(await ask('job-cancel', { id }))
        if (asked.state !== 'running')
          return print(
            context,
            values.json,
            asked,
            () => `${asked.id} is not running (${asked.state}).`,
          )
        // A job stops at its next piece: wait a little to say how it ended.
        const job = await stoppedJob(socket, asked, context.signal)
        return print(context, values.json, job, (ended) =>
          ended.state === 'running'
            ? `Asked ${ended.id} to stop; addcow job status ${ended.id} shows when it has.`
            : ended.state === 'cancelled'
              ? describeCancelled(ended)
              : `${ended.id} ended ${ended.state} before it could stop.`,
        )
      }
      default:
        throw new EngineError(
          'BAD_ARGUMENT',
          `addcow job takes status, list, snapshot, flatten, commit or cancel, not '${action}'.`,
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
  if (status.copyOnReadErrors) lines.push(describeCopyOnReadErrors(status.copyOnReadErrors))
  lines.push(
    ...(status.jobs.length > 0
      ? ['Jobs:', ...status.jobs.map((job) => `  ${describeJob(job)}`)]
      : []),
  )
  return lines.join('\n')
}

/** Failed copies up, in words: how many, and the last one (the guest's reads were answered). */
function describeCopyOnReadErrors(errors: NonNullable<LiveStatus['copyOnReadErrors']>): string {
  const last = errors.last ? `; the last at ${errors.last.at}: ${errors.last.message}` : ''
  return `Copy-on-read failed ${errors.count} time(s) (the guest's reads were answered from below)${last}`
}

/** How often a waiting `job flatten|commit` asks how its job stands. */
const FOLLOW_INTERVAL_MS = 250

/** The options only the copy jobs take, refused with another action. */
const COPY_OPTIONS = ['rate', 'layer', 'force', 'ignore-unchecked', 'undo', 'detach', 'p'] as const

/** The copy-job options only commit takes. */
const COMMIT_ONLY_OPTIONS = new Set<string>(['layer', 'force', 'ignore-unchecked', 'undo'])

/** Refuse a copy-job option given to another action, and a commit option given to flatten. */
function assertCopyOptions(
  action: string,
  values: Partial<Record<(typeof COPY_OPTIONS)[number], unknown>>,
): void {
  for (const option of COPY_OPTIONS) {
    if (values[option] === undefined) continue
    const commitOnly = COMMIT_ONLY_OPTIONS.has(option)
    const fits = action === 'commit' || (action === 'flatten' && !commitOnly)
    if (fits) continue
    const spelled = option === 'p' ? '-p' : `--${option}`
    throw new EngineError(
      'BAD_ARGUMENT',
      `${spelled} goes with addcow job ${commitOnly ? 'commit' : 'flatten or commit'}.`,
      { field: option },
    )
  }
}

/** `--rate SIZE` as bytes per second (a size with K, M, G suffixes). */
function rateOf(values: { rate?: string }): { rate?: number } {
  return values.rate === undefined ? {} : { rate: parseSize(values.rate, 'rate') }
}

function flattenArgs(values: { rate?: string }): Record<string, unknown> {
  return rateOf(values)
}

function commitArgs(values: {
  rate?: string
  layer?: string
  force?: boolean
  'ignore-unchecked'?: boolean
  undo?: string
}): Record<string, unknown> {
  let layer: number | undefined
  if (values.layer !== undefined) {
    layer = Number(values.layer)
    if (!/^\d+$/.test(values.layer) || !Number.isSafeInteger(layer)) {
      throw new EngineError(
        'BAD_ARGUMENT',
        `--layer '${values.layer}' is not a layer depth (0 the served top, 1 the layer below it, ...).`,
        { field: 'layer', value: values.layer },
      )
    }
  }
  return {
    ...rateOf(values),
    ...(layer !== undefined ? { layer } : {}),
    ...(values.force ? { force: true } : {}),
    ...(values['ignore-unchecked'] ? { ignoreUnchecked: true } : {}),
    // The export runs elsewhere: the journal's path is resolved here, in the working folder.
    ...(values.undo !== undefined ? { undo: resolve(values.undo) } : {}),
  }
}

/**
 * Wait for the live job `id` to end, drawing its progress with -p; Ctrl-C asks the export to
 * cancel it (what it copied stays) and goes on waiting for it to stop. Returns the job once
 * done or cancelled (here, or by `addcow job cancel` elsewhere); a job that failed is an error
 * with its code and message.
 */
async function followJob(
  socket: string,
  id: string,
  context: CommandContext,
  progress: boolean,
): Promise<LiveJob> {
  const bar = progressBar(context.stderr, id, progress)
  let cancelSent = false
  try {
    for (;;) {
      if (context.signal.aborted && !cancelSent) {
        cancelSent = true
        await sendControlRequest(socket, 'job-cancel', { id })
      }
      const job = liveJobSchema.parse(await sendControlRequest(socket, 'job-status', { id }))
      if (job.total > 0) bar.update(job.done, job.total)
      if (job.state === 'done' || job.state === 'cancelled') return job
      if (job.state !== 'running') {
        const error = job.error
        throw new EngineError(
          error?.code ?? 'INTERNAL',
          error?.message ?? `The live job ${id} ended ${job.state}.`,
          { field: 'job', value: id, ...(error?.path !== undefined ? { path: error.path } : {}) },
        )
      }
      await new Promise((resolve) => setTimeout(resolve, FOLLOW_INTERVAL_MS))
    }
  } finally {
    bar.finish()
  }
}

/** How long `job cancel` waits for the job to stop before it answers "asked". */
const CANCEL_WAIT_MS = 5000

/** The job `asked` once it stopped, or as it stands after {@link CANCEL_WAIT_MS}. */
async function stoppedJob(socket: string, asked: LiveJob, signal: AbortSignal): Promise<LiveJob> {
  const until = Date.now() + CANCEL_WAIT_MS
  let job = asked
  while (job.state === 'running' && Date.now() < until && !signal.aborted) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    job = parseJob(await sendControlRequest(socket, 'job-status', { id: asked.id }))
  }
  return job
}

/** How far a cancelled flatten or commit went, and what is left of it. */
function describeCancelled(job: LiveJob): string {
  const copied = job.total > 0 ? ` after ${formatSize(job.done)} of ${formatSize(job.total)}` : ''
  const left =
    job.kind === 'snapshot'
      ? 'no snapshot was taken.'
      : job.kind === 'flatten'
        ? 'what it copied stays in the overlay; addcow job flatten goes on from there.'
        : "the guest's view is unchanged; the base holds part of the layer's data until a commit runs to its end."
  return `${job.id} was cancelled${copied}: ${left}`
}

/** What a finished flatten or commit did, in a sentence or two. */
function describeEnd(job: LiveJob): string {
  const result = (job.result ?? {}) as Record<string, unknown>
  if (job.kind === 'flatten') {
    if (result.alreadyDone) return `${String(result.overlay)} was already flattened.`
    return `${job.id} done: ${String(result.clusters)} cluster(s) copied from the chain into ${String(result.overlay)} (${formatSize(Number(result.copiedBytes))} of data, ${formatSize(Number(result.zeroBytes))} of zeros); ALL_ALLOCATED is set and the export reads only its image file.`
  }
  const others = Array.isArray(result.dependents) ? result.dependents.length : 0
  return [
    `${job.id} done: ${formatSize(Number(result.bytes))} of ${String(result.overlay)} committed into ${String(result.base)} in ${String(result.passes)} pass(es); ${String(result.overlay)} is empty now.`,
    result.active
      ? `The export now serves ${String(result.served)}.`
      : `The export serves ${String(result.served)}, reading the same data.`,
    ...(others > 0 ? [`${others} other image(s) that read through the base see the change.`] : []),
    ...(typeof result.undo === 'string'
      ? [
          `Undo journal: ${result.undo} ('addcow commit --rollback ${result.undo}' puts the base back).`,
        ]
      : []),
  ].join('\n')
}
