import { z } from 'zod'

/**
 * Arguments and replies of the live copy jobs a running export's control socket takes besides
 * shared/live-control.ts's built-in commands: `flatten` and `commit` (issue 17 items 2 and 3).
 * Both start a job and answer its id at once; the client follows it with `job-status`.
 */

/** Smallest rate a live job takes, in bytes per second (one 4 KiB cluster a second). */
export const LIVE_MIN_RATE = 4096

/** Bytes per second at most; absent: as fast as it goes. */
const rateSchema = z.number().int().min(LIVE_MIN_RATE).max(Number.MAX_SAFE_INTEGER)

/** Arguments of `flatten`. */
export const liveFlattenArgsSchema = z.strictObject({ rate: rateSchema.optional() })

/** Arguments of `commit`. */
export const liveCommitArgsSchema = z.strictObject({
  /** Depth of the layer to commit into the one below it: 0 the served top (active commit). */
  layer: z.number().int().min(0).max(63).optional(),
  rate: rateSchema.optional(),
  /** Commit although other images read through the base (their guest view changes). */
  force: z.boolean().optional(),
  /** Do not count the images that could not be checked as affected. */
  ignoreUnchecked: z.boolean().optional(),
  /** The undo journal's absolute path (offline commit's journal; resumed when it exists). */
  undo: z
    .string()
    .max(4096)
    .refine((path) => path.startsWith('/'), 'an absolute path')
    .optional(),
})

/** What `flatten` and `commit` answer: the id of the job they started. */
export const liveJobStartedSchema = z.object({ id: z.string() })

/** What a finished live flatten did (main/engine/live/flatten.ts, LiveFlattenResult). */
export const liveFlattenResultSchema = z.object({
  overlay: z.string(),
  /** Clusters this run copied from the chain, bytes copied, bytes that were zeros. */
  clusters: z.number(),
  copiedBytes: z.number(),
  zeroBytes: z.number(),
  /** Clusters a guest write had filled by the time the stream reached them. */
  guestWon: z.number(),
  /** ALL_ALLOCATED was already set: nothing to do. */
  alreadyDone: z.boolean(),
})

/** What a finished live flatten did. */
export type LiveFlattenResultView = z.infer<typeof liveFlattenResultSchema>

/** What a finished live commit did (main/engine/live/commit.ts, LiveCommitResult). */
export const liveCommitResultSchema = z.object({
  overlay: z.string(),
  base: z.string(),
  baseFormat: z.string(),
  /** The served top itself was committed; the export now serves the base. */
  active: z.boolean(),
  clusters: z.number(),
  bytes: z.number(),
  passes: z.number(),
  /** What the export serves now. */
  served: z.string(),
})

/** What a finished live commit did. */
export type LiveCommitResultView = z.infer<typeof liveCommitResultSchema>
