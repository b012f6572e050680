import { z } from 'zod'
import { ERROR_CODES } from './error-codes'

/**
 * The control protocol of a running export (`addcow serve`, `addcow launch`, the app): one JSON
 * object per line each way over a Unix socket, the request naming a command and its arguments,
 * the reply carrying the same id and `{ ok: true, value }` or `{ ok: false, error }`. Requests
 * are checked against these schemas in the serving process; replies in the client.
 */

/** Longest line either side accepts (bytes); a longer request closes the connection. */
export const LIVE_CONTROL_MAX_LINE = 64 * 1024

/** Longest command name. */
const MAX_COMMAND = 64

/** A request: a command, its arguments (checked by that command's schema) and an id to echo. */
export const liveRequestSchema = z.strictObject({
  id: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  command: z
    .string()
    .min(1)
    .max(MAX_COMMAND)
    .regex(/^[a-z][a-z-]*$/),
  args: z.record(z.string(), z.unknown()).default({}),
})

/** A request as sent. */
export type LiveRequest = z.input<typeof liveRequestSchema>

/** An error as it crosses the socket: a stable code and one sentence, with what is at fault. */
export const liveErrorSchema = z.object({
  code: z.enum(ERROR_CODES),
  message: z.string(),
  path: z.string().optional(),
  field: z.string().optional(),
})

/** A reply to the request with the same id. */
export const liveReplySchema = z.union([
  z.object({ id: z.number(), ok: z.literal(true), value: z.unknown() }),
  z.object({ id: z.number(), ok: z.literal(false), error: liveErrorSchema }),
])

/** A reply as received. */
export type LiveReply = z.infer<typeof liveReplySchema>

/** Where a live job stands. */
export const LIVE_JOB_STATES = ['running', 'done', 'failed', 'cancelled'] as const

/** One live job (snapshot, flatten, commit, ...) as `jobs` lists it. */
export const liveJobSchema = z.object({
  id: z.string(),
  /** The command that started it ('snapshot', 'flatten', 'commit'). */
  kind: z.string(),
  state: z.enum(LIVE_JOB_STATES),
  /** Bytes done of `total` (0 of 0 for a job without a size, such as a snapshot). */
  done: z.number(),
  total: z.number(),
  /** ISO times. */
  startedAt: z.string(),
  finishedAt: z.string().optional(),
  /** What the job is doing, in words ("freezing top.add-cow"). */
  detail: z.string().optional(),
  error: liveErrorSchema.optional(),
  /** What a finished job produced (a snapshot: the new top and the frozen layer). */
  result: z.unknown().optional(),
})

/** One live job. */
export type LiveJob = z.infer<typeof liveJobSchema>

/** What `status` answers: the export and the chain it serves now. */
export const liveStatusSchema = z.object({
  pid: z.number(),
  /** The top served now (it changes with each live snapshot). */
  top: z.string(),
  format: z.string(),
  size: z.number(),
  readOnly: z.boolean(),
  /** Every layer's path, the top first. */
  chain: z.array(z.string()),
  /** The NBD URI clients connect to, when the export has one. */
  uri: z.string().optional(),
  /** Times the top was replaced since the export started. */
  swaps: z.number(),
  copyOnRead: z.boolean(),
  /**
   * Copies up that failed (a full disk, a read-only overlay): the guest's reads were answered
   * all the same, the clusters stay below. The last failure in words, with its time.
   */
  copyOnReadErrors: z
    .object({
      count: z.number(),
      last: z.object({ message: z.string(), at: z.string() }).optional(),
    })
    .optional(),
  jobs: z.array(liveJobSchema),
})

/** What `status` answers. */
export type LiveStatus = z.infer<typeof liveStatusSchema>

/** Arguments of `job-cancel` and `job-status`. */
export const liveJobIdArgsSchema = z.strictObject({ id: z.string().min(1).max(64) })

/** Arguments of `snapshot`: the new top's file name (default `<top>-snapN.add-cow` beside it). */
export const liveSnapshotArgsSchema = z.strictObject({
  name: z.string().min(1).max(4096).optional(),
})

/** What `snapshot` answers. */
export const liveSnapshotResultSchema = z.object({
  /** The new (empty) top now served. */
  top: z.string(),
  /** The layer frozen under it, now read-only and locked shared (qemu-img may read it). */
  frozen: z.string(),
  /** What went wrong after the snapshot took place (the library could not record it). */
  warning: z.string().optional(),
  /** How long guest requests were held, in milliseconds. */
  pauseMs: z.number(),
  /** What the pause was made of: waiting for requests in flight, flushing the frozen layer,
   * switching to the new top (open, locks, swap). */
  phases: z.object({ drainMs: z.number(), flushMs: z.number(), switchMs: z.number() }),
})

/** What `snapshot` answers. */
export type LiveSnapshotResult = z.infer<typeof liveSnapshotResultSchema>
