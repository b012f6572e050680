import { z } from 'zod'
import { ERROR_CODES } from '../error-codes'
import type { ImageInfo, MapExtent, NameResolution, NameVerdictReason } from '../image-types'
import { liveSnapshotResultSchema, liveStatusSchema } from '../live-control'
import {
  liveCommitArgsSchema,
  liveCommitResultSchema,
  liveFlattenArgsSchema,
  liveFlattenResultSchema,
} from '../live-copy-jobs'
import { MachineNameSchema, SavedMachineSchema } from '../machine-types'
import {
  CHANNEL_NAMES,
  CHANNELS,
  EVENTS,
  isChannel,
  type Channel,
  type EventName,
} from './channels'
import type { IpcError } from './result'

/**
 * The IPC contract: for every channel in `channels.ts`, the schema of its request and of its
 * response (or, for a job, of its final result), and for every event the schema of its payload.
 *
 * main validates every request against these schemas before a handler sees it; the renderer
 * validates every response. The `satisfies` clauses make a channel or event without a schema a
 * compile error, and `main/ipc/handler-table.ts` does the same for handlers.
 */

/** Longest path accepted over IPC (PATH_MAX on Linux). */
export const MAX_PATH_LENGTH = 4096

/** Whether `text` is an absolute POSIX path, a Windows drive path or a UNC path. */
export function isAbsolutePath(text: string): boolean {
  return text.startsWith('/') || /^[A-Za-z]:[\\/]/.test(text) || text.startsWith('\\\\')
}

/** Mutual assignability of two types: keeps a schema and its hand-written interface in step. */
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false

/** A byte count or offset: a whole number from 0 to 2^53 - 1. */
export const ByteCountSchema = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)

/** A file name or path as a user or an image gives it: not empty, no NUL, at most PATH_MAX. */
export const NameSchema = z
  .string()
  .min(1)
  .max(MAX_PATH_LENGTH)
  .refine((text) => !text.includes('\0'), { message: 'must not contain a NUL character' })

/** An absolute path: IPC has no working directory, so relative paths are refused. */
export const AbsolutePathSchema = NameSchema.refine(isAbsolutePath, {
  message: 'must be an absolute path',
})

/** A format name such as `add-cow`, `raw` or `qcow2`. */
export const FormatNameSchema = z
  .string()
  .regex(/^[a-z][a-z0-9-]{0,31}$/, { message: 'is not a format name' })

/** One of the stable error codes of `shared/error-codes.ts`. */
export const ErrorCodeSchema = z.enum(ERROR_CODES)

/** {@link IpcError} as a schema. */
export const IpcErrorSchema = z.object({
  code: ErrorCodeSchema,
  message: z.string(),
  path: z.string().optional(),
  field: z.string().optional(),
  value: z.union([z.string(), z.number(), z.boolean(), z.null()]).optional(),
})
const _ipcError: Same<z.infer<typeof IpcErrorSchema>, IpcError> = true

/** A channel name. */
export const ChannelSchema = z.custom<Channel>(isChannel, { message: 'is not a channel' })

const NameVerdictReasonSchema = z.enum([
  'inside-folder',
  'trusted-in-library',
  'allowed-by-user',
  'outside-folder',
  'protocol',
  'json',
  'device',
  'not-regular-file',
  'missing',
  'loop',
  'self',
  'same-file',
])
const _nameVerdictReason: Same<z.infer<typeof NameVerdictReasonSchema>, NameVerdictReason> = true

/** {@link NameResolution} as a schema. */
export const NameResolutionSchema = z.object({
  stored: z.string(),
  resolved: z.string(),
  format: z.string().nullable(),
  followed: z.boolean(),
  reason: NameVerdictReasonSchema,
})
const _nameResolution: Same<z.infer<typeof NameResolutionSchema>, NameResolution> = true

/** {@link ImageInfo} (one layer of `addcow info --json`) as a schema. */
export const ImageInfoSchema = z.object({
  filename: z.string(),
  format: z.string(),
  'virtual-size': ByteCountSchema,
  'actual-size': ByteCountSchema,
  'cluster-size': ByteCountSchema.optional(),
  'backing-filename': z.string().optional(),
  'full-backing-filename': z.string().optional(),
  'backing-filename-format': z.string().optional(),
  'data-file': z.string().optional(),
  'full-data-file': z.string().optional(),
  'data-file-format': z.string().optional(),
  'data-file-actual-size': ByteCountSchema.optional(),
  'allocated-clusters': ByteCountSchema.optional(),
  'total-clusters': ByteCountSchema.optional(),
  'all-allocated': z.boolean().optional(),
  'format-specific': z.record(z.string(), z.unknown()).optional(),
  names: z.array(NameResolutionSchema).optional(),
  warnings: z.array(z.string()).optional(),
})
const _imageInfo: Same<z.infer<typeof ImageInfoSchema>, ImageInfo> = true

/** {@link MapExtent} (one entry of `addcow map --json`) as a schema. */
export const MapExtentSchema = z.object({
  start: ByteCountSchema,
  length: ByteCountSchema,
  depth: z.number().int().min(0),
  present: z.boolean(),
  zero: z.boolean(),
  data: z.boolean(),
})
const _mapExtent: Same<z.infer<typeof MapExtentSchema>, MapExtent> = true

/** One layer of a chain as the map and allocation channels name it. */
export const ChainLayerSchema = z.object({
  depth: z.number().int().min(0),
  path: z.string(),
  format: z.string(),
})

/** Where an image's backing file stands, as the library shows it. */
export const BaseStatusSchema = z.enum([
  /** The image has no backing file. */
  'none',
  /** The backing file was found, the name policy follows it, and it matches its fingerprint. */
  'ok',
  /** The backing file does not exist. */
  'missing',
  /** The name policy refuses the name (outside the folder and not trusted, or a protocol). */
  'refused',
  /** The backing file changed since the overlay was made (where the format records it). */
  'changed',
  /** The backing file is found and followed, but no fingerprint of it was recorded here. */
  'unverified',
  /** The overlay is fully allocated (flattened): its base is never read. */
  'not-read',
])

/** An image's base as every view shows it (engine/ops/base-state.ts, BaseState). */
export const BaseStateSchema = z.object({
  status: BaseStatusSchema,
  stored: z.string().nullable(),
  path: z.string().nullable(),
  reason: NameVerdictReasonSchema.nullable(),
  /** With `changed`: one phrase per difference. */
  changes: z.array(z.string()),
})

/** A commit that stopped part way (engine/library.ts, InterruptedCommit). */
export const InterruptedCommitSchema = z.object({
  overlay: z.string(),
  base: z.string(),
  journal: z.string().nullable(),
  bytesCommitted: ByteCountSchema,
  ranges: z.array(z.tuple([ByteCountSchema, ByteCountSchema])),
  bytesTotal: ByteCountSchema,
  dependents: z.array(z.string()),
  code: z.string(),
  message: z.string(),
  at: z.string(),
})

/** An interrupted commit as the app shows it. */
export type InterruptedCommitView = z.infer<typeof InterruptedCommitSchema>

/** One image of the library, with what the library view shows about it. */
export const ImageSummarySchema = z.object({
  path: z.string(),
  name: z.string(),
  addedAt: z.string(),
  format: z.string().nullable(),
  virtualSize: ByteCountSchema.nullable(),
  /** Bytes used on disk by the image's own files (add-cow file and image file). */
  diskUsage: ByteCountSchema.nullable(),
  /** Each of the image's own files with the bytes it uses on disk (empty when unreadable). */
  files: z.array(
    z.object({
      /** `metadata`: the add-cow file; `data`: its image file; `image`: a one-file format. */
      role: z.enum(['image', 'metadata', 'data']),
      path: z.string(),
      diskUsage: ByteCountSchema,
    }),
  ),
  clusterSize: ByteCountSchema.nullable(),
  /** Share of the image's clusters written in this layer, 0..100; null when not layered. */
  allocatedPercent: z.number().min(0).max(100).nullable(),
  base: z.object({
    status: BaseStatusSchema,
    stored: z.string().nullable(),
    path: z.string().nullable(),
    reason: NameVerdictReasonSchema.nullable(),
  }),
  /** Layers in the chain that could be opened, the image included. */
  chainLength: z.number().int().min(0),
  /** Library images whose backing file is this image. */
  dependents: z.array(z.string()),
  /**
   * The loop of stored base names this image is part of (this image first, each naming the
   * next as its base; flattened layers included), or null: a chain that never ends.
   */
  loop: z.array(z.string()).nullable().default(null),
  /** Set when the image could not be read (missing, corrupt, unsupported). */
  error: IpcErrorSchema.nullable(),
  /**
   * True while the image is still being read: a list of a large library read for the first time
   * answers before every image is read (only path, name and addedAt are then known), and a
   * `library:changed` event with reason `summarized` follows once they all are.
   */
  pending: z.boolean().optional(),
})

/** The state of a job. `cancelling` means cancel was asked and the job is winding down. */
export const JobStateSchema = z.enum(['running', 'cancelling', 'done', 'failed', 'cancelled'])

/** A job's progress: counters, and a rate and time left once they can be estimated. */
export const JobProgressSchema = z.object({
  done: z.number().min(0),
  total: z.number().min(0),
  /** Whether done/total count bytes or steps. */
  unit: z.enum(['bytes', 'steps']),
  fraction: z.number().min(0).max(1),
  bytesPerSecond: z.number().min(0).nullable(),
  secondsLeft: z.number().min(0).nullable(),
})

/** What the jobs list and every job event say about a job. */
export const JobInfoSchema = z.object({
  id: z.string(),
  channel: ChannelSchema,
  title: z.string(),
  state: JobStateSchema,
  startedAt: z.number(),
  finishedAt: z.number().nullable(),
  progress: JobProgressSchema,
  /** What a long-lived job is doing now (the NBD URI it serves, the VM's pid...). */
  detail: z.string().nullable(),
  error: IpcErrorSchema.nullable(),
  /** The image the job acts on (its request's `path`), for a link to it; absent when none. */
  image: z.string().optional(),
  /**
   * The VM job a live operation works on (its request's `jobId`: a live snapshot, flatten or
   * commit), so the VM's page finds it again after a reload; absent for other jobs.
   */
  vmJobId: z.string().optional(),
})

/** The immediate reply of every job channel: the job, started. */
export const JobStartedSchema = z.object({ job: JobInfoSchema })

const EmptyRequestSchema = z.strictObject({})

const CountSchema = z.number().int().min(0)

/** One finding of `check` (engine/ops/check.ts, CheckProblem). */
export const CheckProblemSchema = z.object({
  code: z.string(),
  severity: z.enum(['corruption', 'leak', 'error', 'warning']),
  message: z.string(),
  field: z.string().optional(),
  offset: ByteCountSchema.optional(),
  value: z.union([z.string(), z.number()]).optional(),
  expected: z.union([z.string(), z.number()]).optional(),
  count: z.number().optional(),
  repair: z.enum(['leaks', 'all']).nullable(),
  repaired: z.boolean(),
})

/** The report of `addcow check --json` (engine/ops/check.ts, CheckReport). */
export const CheckReportSchema = z.object({
  filename: z.string(),
  format: z.string(),
  unsupported: z.boolean().optional(),
  'check-errors': CountSchema,
  corruptions: CountSchema,
  leaks: CountSchema,
  'corruptions-fixed': CountSchema,
  'leaks-fixed': CountSchema,
  'total-clusters': CountSchema.optional(),
  'allocated-clusters': CountSchema.optional(),
  'image-end-offset': ByteCountSchema.optional(),
  'virtual-size': ByteCountSchema.optional(),
  'all-allocated': z.boolean().optional(),
  'leaked-bytes': ByteCountSchema,
  'leak-scan': z.enum(['done', 'not-supported', 'skipped']),
  'leak-scan-note': z.string().optional(),
  'base-fingerprint': z.enum([
    'unchanged',
    'changed',
    'not-recorded',
    'no-backing',
    'not-consulted',
    'not-checked',
  ]),
  problems: z.array(CheckProblemSchema),
  repairs: z.array(z.string()),
})

/**
 * An image whose guest view a commit into a base (or its rollback) changes, or might
 * (engine/ops/blast-radius.ts, DependentImage): `reads` through the base, transitively, or
 * `unknown` (could not be checked: `problem` says why).
 */
export const DependentImageSchema = z.object({
  path: z.string(),
  format: z.string().nullable(),
  backingName: z.string().nullable(),
  dependsHow: z.enum(['reads', 'unknown']),
  /** This image, then each image it reads through, down to the base. */
  through: z.array(z.string()),
  problem: z.string().nullable(),
})

/** Who else a commit of `overlay` into `base` changes (offline and live commit alike). */
const BlastRadiusSchema = z.object({
  overlay: z.string(),
  base: z.string(),
  dependents: z.array(DependentImageSchema),
  unchecked: z.array(DependentImageSchema),
  searched: z.array(z.string()),
  truncated: z.array(z.string()),
})

/** The running VM a live operation works on: its VM job. */
const VmJobIdSchema = z.string().min(1).max(64)

/** How QEMU should run: the same choices as `addcow qemu-cmd` and `addcow launch`. */
const QemuRequestFields = {
  path: AbsolutePathSchema,
  via: z.enum(['nbd', 'native', 'raw']).default('nbd'),
  memoryMiB: z
    .number()
    .int()
    .min(16)
    .max(16 * 1024 * 1024)
    .optional(),
  cpus: z.number().int().min(1).max(1024).optional(),
  headless: z.boolean().default(false),
  readOnly: z.boolean().default(false),
  /** Go on although the base changed since the overlay was made, and record it as expected. */
  acceptBase: z.boolean().default(false),
  extraArgs: z.array(z.string().max(4096)).max(64).optional(),
  /**
   * Run without saving changes (via nbd): the guest writes into a throw-away overlay on top of
   * the image, deleted when QEMU exits; the image is not written.
   */
  discardChanges: z.boolean().default(false),
  /**
   * Copy-on-read (via nbd, as `addcow launch --copy-on-read`): what the guest reads from the
   * base is copied into the overlay, warming it.
   */
  copyOnRead: z.boolean().default(false),
  /** Machine type (`-machine`); default q35 on x86, virt on Arm and RISC-V. */
  machine: z
    .string()
    .regex(/^[a-z0-9][a-z0-9._-]{0,63}$/, { message: 'is not a machine type' })
    .optional(),
  /** `user`: NAT networking with a virtio NIC (the default); `none`: no network card. */
  network: z.enum(['user', 'none']).optional(),
  /**
   * A window (GTK or SDL), VNC on 127.0.0.1:5900, or `app`: the graphical console in the app
   * (VNC on a Unix socket in the VM's private folder, bridged over the app's own connection);
   * when not headless. Absent: QEMU's choice.
   */
  display: z.enum(['gtk', 'sdl', 'vnc', 'app']).optional(),
}

/** A QEMU command line (main/qemu/command.ts, QemuCommand). */
export const QemuCommandSchema = z.object({
  via: z.enum(['nbd', 'native', 'raw']),
  binary: z.string(),
  args: z.array(z.string()),
  explained: z.array(z.object({ args: z.array(z.string()), explanation: z.string() })),
  rendering: z.string(),
  prerequisite: z.object({ args: z.array(z.string()), explanation: z.string() }).nullable(),
})

/** A choice the launch form offers, whether this QEMU and host allow it, and why not. */
const QemuOfferSchema = z.object({ available: z.boolean(), reason: z.string().nullable() })

/** What this host's QEMU supports (main/qemu/capabilities.ts), for the launch form. */
export const QemuCapabilitiesSchema = z.object({
  /** The qemu-system binary for the host's architecture, or null when none is installed. */
  binary: z.string().nullable(),
  version: z.string().nullable(),
  /** KVM only when a test guest ran on it; the reason says why not. */
  accelerator: z.object({ accel: z.enum(['kvm', 'tcg']), reason: z.string() }),
  displays: z.object({
    default: QemuOfferSchema,
    gtk: QemuOfferSchema,
    sdl: QemuOfferSchema,
    vnc: QemuOfferSchema,
    app: QemuOfferSchema,
    none: QemuOfferSchema,
  }),
  /**
   * The display the form starts with: a window when one can open on the user's desktop (the
   * Electron app with a DISPLAY), else the graphical console in the app.
   */
  defaultDisplay: z.enum(['default', 'gtk', 'sdl', 'vnc', 'app', 'none']),
  machines: z.array(
    z.object({ name: z.string(), description: z.string(), isDefault: z.boolean() }),
  ),
  /** `--via native`: this QEMU has the add-cow driver. */
  nativeAddCow: QemuOfferSchema,
  /** OVMF code images found (Debian's ovmf package), best first. */
  uefiFirmware: z.array(z.string()),
})

/**
 * A launched VM's run state, from QMP (query-status and the STOP, RESUME, POWERDOWN, RESET and
 * SHUTDOWN events): `shutting-down` once the ACPI power button was pressed, until the guest
 * powers off or resets; `stopped` once QEMU is on its way out.
 */
export const VmStateSchema = z.enum(['running', 'paused', 'shutting-down', 'stopped'])

/** {@link VmStateSchema}'s values. */
export type VmState = z.infer<typeof VmStateSchema>

/** How a VM ended (main/qemu/launcher.ts, VmExit). */
export const VmExitSchema = z.object({
  code: z.number().int().nullable(),
  signal: z.string().nullable(),
  status: z.number().int(),
})

/** What a VM job (a launch or a saved machine's start) ends with. */
const VmResultSchema = z.object({ exit: VmExitSchema, command: z.string() })

/** A saved machine as the Machines screen lists it: the machine, and its VM job if it runs. */
export const MachineViewSchema = SavedMachineSchema.extend({
  /** The job of the VM this app runs from the machine, or null when it is stopped. */
  runningJob: z.string().nullable(),
})

/** A saved machine as the Machines screen lists it. */
export type MachineView = z.output<typeof MachineViewSchema>

/** What a reset did, or would do (engine/ops/reset.ts, ResetResult). */
export const ResetResultSchema = z.object({
  overlay: z.string(),
  base: z.string(),
  image: z.string(),
  clusters: CountSchema,
  bytes: ByteCountSchema,
  wasFlattened: z.boolean(),
  emptiedBy: z.enum(['punched', 'zeroed']).nullable(),
  dryRun: z.boolean(),
})

const JobIdRequestSchema = z.strictObject({ jobId: z.string().min(1).max(64) })

const FileFilterSchema = z.strictObject({
  name: z.string().min(1).max(100),
  extensions: z
    .array(z.string().regex(/^(\*|[A-Za-z0-9_.-]{1,16})$/))
    .min(1)
    .max(32),
})

/** A request/response channel. */
export interface CallSpec<
  Request extends z.ZodType = z.ZodType,
  Response extends z.ZodType = z.ZodType,
> {
  kind: 'call'
  summary: string
  request: Request
  response: Response
}

/** A job channel: replies at once with the job; the result arrives with the `jobs:done` event. */
export interface JobSpec<
  Request extends z.ZodType = z.ZodType,
  Result extends z.ZodType = z.ZodType,
> {
  kind: 'job'
  summary: string
  request: Request
  result: Result
}

/** Any channel's spec. */
export type ChannelSpec = CallSpec | JobSpec

function call<Request extends z.ZodType, Response extends z.ZodType>(
  summary: string,
  request: Request,
  response: Response,
): CallSpec<Request, Response> {
  return { kind: 'call', summary, request, response }
}

function job<Request extends z.ZodType, Result extends z.ZodType>(
  summary: string,
  request: Request,
  result: Result,
): JobSpec<Request, Result> {
  return { kind: 'job', summary, request, result }
}

/** The schemas of every channel. */
export const CONTRACT = {
  [CHANNELS.libraryListImages]: call(
    'The library of known images, each with its summary. With `since` (the `version` of a listing the client holds, which main remembers) only the rows that changed since then are sent, with the order of paths when it changed; else (`since: null` in the answer) every image.',
    z.strictObject({ since: z.string().max(64).optional() }),
    z.object({
      /** Every image; with `since` set, only those whose summary changed since that version. */
      images: z.array(ImageSummarySchema),
      warning: z.string().nullable(),
      /** This listing's name, for the next list's `since`. */
      version: z.string(),
      /** The version `images` is a change to, or null when `images` is the whole library. */
      since: z.string().nullable(),
      /** With `since`: every path in order, when images came, went or moved; else null. */
      order: z.array(z.string()).nullable(),
    }),
  ),
  [CHANNELS.libraryAddImages]: call(
    'Add images to the library (each must open as an image) and to the recent list: those that open are added, the others are listed in `failed` with why (all failing is an error).',
    z.strictObject({ paths: z.array(AbsolutePathSchema).min(1).max(100) }),
    z.object({
      added: z.array(z.string()),
      failed: z.array(z.object({ path: z.string(), error: IpcErrorSchema })),
    }),
  ),
  [CHANNELS.libraryRemoveImages]: call(
    'Remove images from the library; their files are untouched.',
    z.strictObject({ paths: z.array(AbsolutePathSchema).min(1).max(1000) }),
    z.object({ removed: z.array(z.string()) }),
  ),
  [CHANNELS.libraryListRecent]: call(
    'Recently opened or created images, newest first.',
    EmptyRequestSchema,
    z.object({ paths: z.array(z.string()) }),
  ),
  [CHANNELS.libraryApproveName]: call(
    "Trust a name stored in an image's chain that the policy refuses (outside the folder).",
    z.strictObject({ image: AbsolutePathSchema, stored: NameSchema }),
    z.object({ from: z.string(), to: z.string(), alreadyFollowed: z.boolean() }),
  ),
  [CHANNELS.libraryRecordFingerprint]: call(
    "Record the current fingerprint of an overlay's base (the user vouches for it: Record now).",
    z.strictObject({ path: AbsolutePathSchema }),
    z.object({ overlay: z.string(), base: z.string(), recordedAt: z.string() }),
  ),
  [CHANNELS.libraryDeleteFiles]: call(
    "Delete an image's own files (add-cow file and image file) and drop it from the library; HAS_DEPENDENTS while other images read through it. dryRun only lists.",
    z.strictObject({ path: AbsolutePathSchema, dryRun: z.boolean().default(false) }),
    z.object({
      image: z.string(),
      files: z.array(z.string()),
      dependents: z.array(
        z.object({ path: z.string(), how: z.enum(['reads', 'not-read', 'unknown']) }),
      ),
      deleted: z.boolean(),
    }),
  ),
  [CHANNELS.libraryLocateBase]: call(
    'Point an overlay whose base moved at the file the user found (`addcow locate`): size and recorded fingerprint checked, BASE_CHANGED unless force.',
    z.strictObject({
      overlay: AbsolutePathSchema,
      base: AbsolutePathSchema,
      force: z.boolean().default(false),
    }),
    z.object({
      overlay: z.string(),
      base: z.string(),
      format: z.string(),
      stored: z.string(),
      relative: z.boolean(),
      expectedSize: ByteCountSchema,
      size: ByteCountSchema,
      fingerprint: z.enum(['matched', 'not-recorded', 'differs']),
    }),
  ),
  [CHANNELS.imageGetInfo]: call(
    'What `addcow info` shows: every layer with backingChain (default), never following a refused name.',
    z.strictObject({ path: AbsolutePathSchema, backingChain: z.boolean().default(true) }),
    z.object({ layers: z.array(ImageInfoSchema).min(1) }),
  ),
  [CHANNELS.imageGetMap]: call(
    'Allocation extents of the guest view with their depth, from offset, at most limit extents.',
    z.strictObject({
      path: AbsolutePathSchema,
      offset: ByteCountSchema.default(0),
      length: ByteCountSchema.optional(),
      limit: z.number().int().min(1).max(100_000).default(10_000),
    }),
    z.object({
      virtualSize: ByteCountSchema,
      layers: z.array(ChainLayerSchema),
      extents: z.array(MapExtentSchema),
      truncated: z.boolean(),
      nextOffset: ByteCountSchema.nullable(),
    }),
  ),
  [CHANNELS.imageGetAllocation]: call(
    'Allocation summed into N equal buckets, bytes per depth, for drawing a whole disk cheaply.',
    z.strictObject({
      path: AbsolutePathSchema,
      buckets: z.number().int().min(1).max(4096).default(256),
      /** Start of the range to sum (a zoomed view); default 0. */
      offset: ByteCountSchema.default(0),
      /** Length of the range; default: to the end of the disk. */
      length: ByteCountSchema.optional(),
    }),
    z.object({
      virtualSize: ByteCountSchema,
      /**
       * The image's cluster size (its own layer's), or null for a layer without clusters (raw):
       * what the map needs of the image besides the sums, so opening it asks main once.
       */
      clusterSize: z.number().int().positive().nullable(),
      /** The range the buckets cover: bucket i starts at offset + i * bucketSize. */
      offset: ByteCountSchema,
      length: ByteCountSchema,
      bucketSize: ByteCountSchema,
      layers: z.array(ChainLayerSchema),
      /**
       * present[d] = bytes of data of the bucket that come from depth d; zero = bytes that read
       * as zeros (no layer holds them, or a layer holds them as a hole, as qemu-img map's
       * `"zero": true, "data": false`).
       */
      buckets: z.array(z.object({ present: z.array(ByteCountSchema), zero: ByteCountSchema })),
      totals: z.object({
        present: z.array(ByteCountSchema),
        zero: ByteCountSchema,
        /** holes[d] = bytes depth d holds as holes: they read as zeros and count in `zero`. */
        holes: z.array(ByteCountSchema).optional(),
      }),
    }),
  ),
  [CHANNELS.imageFindWritten]: call(
    'The next range of data the image itself holds (depth 0) at or after offset; null past the last.',
    z.strictObject({ path: AbsolutePathSchema, offset: ByteCountSchema.default(0) }),
    z.object({
      virtualSize: ByteCountSchema,
      /** [start, end) in bytes, or null when nothing is written from offset to the end. */
      range: z.object({ start: ByteCountSchema, end: ByteCountSchema }).nullable(),
    }),
  ),
  [CHANNELS.imageGetBlastRadius]: call(
    'The other images a commit of this overlay would change: every image that reads through its base, transitively (stopping at fully allocated layers), and those that could not be checked.',
    z.strictObject({ overlay: AbsolutePathSchema }),
    BlastRadiusSchema,
  ),
  [CHANNELS.imageGetBaseState]: call(
    "Where the image's base stands, its sampled content compared too (the state Check and Launch show).",
    z.strictObject({ path: AbsolutePathSchema }),
    BaseStateSchema,
  ),
  [CHANNELS.imageGetCommitState]: call(
    'The commit of this overlay that stopped part way, if any: what the base holds, who sees it, the journal.',
    z.strictObject({ overlay: AbsolutePathSchema }),
    z.object({ commit: InterruptedCommitSchema.nullable() }),
  ),
  [CHANNELS.operationsCreateOverlay]: job(
    'Create an add-cow overlay (and its image file); it joins the library and its names are trusted.',
    z.strictObject({
      overlay: AbsolutePathSchema,
      /** Stored as given; a relative name is relative to the overlay's folder. */
      backing: NameSchema.optional(),
      backingFormat: FormatNameSchema.optional(),
      image: NameSchema.optional(),
      size: ByteCountSchema.optional(),
      clusterSize: z
        .number()
        .int()
        .min(4096)
        .max(2 * 1024 * 1024)
        .optional(),
    }),
    z.object({
      overlay: z.string(),
      image: z.string(),
      imageCreated: z.boolean(),
      backing: z.string().nullable(),
      backingFormat: z.string().nullable(),
      size: ByteCountSchema,
      clusterSize: ByteCountSchema,
    }),
  ),
  [CHANNELS.operationsCompareImages]: job(
    'Compare the guest-visible content of two images, as qemu-img compare does.',
    z.strictObject({ a: AbsolutePathSchema, b: AbsolutePathSchema }),
    z.object({
      identical: z.boolean(),
      firstDifference: ByteCountSchema.nullable(),
      sizes: z.tuple([ByteCountSchema, ByteCountSchema]),
    }),
  ),
  [CHANNELS.operationsCheckImage]: job(
    'Check an image for damage (`addcow check`); with repair, fix what is safe at that level.',
    z.strictObject({
      path: AbsolutePathSchema,
      repair: z.enum(['leaks', 'all']).optional(),
      acceptBase: z.boolean().default(false),
    }),
    z.object({ report: CheckReportSchema, exitCode: z.number().int() }),
  ),
  [CHANNELS.operationsCommitOverlay]: job(
    "Copy the overlay's clusters into its base (`addcow commit`); CONFIRMATION_REQUIRED when other images use the base, unless force.",
    z.strictObject({
      overlay: AbsolutePathSchema,
      keep: z.boolean().default(false),
      force: z.boolean().default(false),
      /** Do not count images that could not be checked as affected (the user vouches). */
      ignoreUnchecked: z.boolean().default(false),
      acceptBase: z.boolean().default(false),
      undo: AbsolutePathSchema.optional(),
    }),
    z.object({
      overlay: z.string(),
      base: z.string(),
      baseFormat: z.string(),
      clusters: CountSchema,
      bytes: ByteCountSchema,
      emptied: z.boolean(),
      emptiedBy: z.enum(['punched', 'zeroed']).nullable(),
      dependents: z.array(DependentImageSchema),
      unchecked: z.array(DependentImageSchema),
      undo: z.string().nullable(),
      resumed: z.boolean(),
      grewBase: z.tuple([ByteCountSchema, ByteCountSchema]).nullable(),
      lockKind: z.string(),
    }),
  ),
  [CHANNELS.operationsRollbackCommit]: job(
    'Undo a journaled commit (`addcow commit --rollback FILE`): the base gets its old bytes back, the overlay its data; BASE_CHANGED or MISSING_FILE unless force.',
    z.strictObject({
      journal: AbsolutePathSchema,
      force: z.boolean().default(false),
      ignoreUnchecked: z.boolean().default(false),
    }),
    z.object({
      base: z.string(),
      overlay: z.string(),
      restoredBytes: ByteCountSchema,
      overlayClusters: CountSchema,
      alreadyDone: z.boolean(),
      dependents: z.array(DependentImageSchema),
      unchecked: z.array(DependentImageSchema),
    }),
  ),
  [CHANNELS.operationsStreamOverlay]: job(
    'Flatten: copy the rest of the chain into the image file and set ALL_ALLOCATED (`addcow stream`).',
    z.strictObject({ overlay: AbsolutePathSchema, acceptBase: z.boolean().default(false) }),
    z.object({
      overlay: z.string(),
      clusters: CountSchema,
      copiedBytes: ByteCountSchema,
      zeroBytes: ByteCountSchema,
      alreadyDone: z.boolean(),
    }),
  ),
  [CHANNELS.operationsRebaseOverlay]: job(
    "Point the overlay at another base (`addcow rebase`); '' detaches; unsafe rewrites the name only.",
    z.strictObject({
      overlay: AbsolutePathSchema,
      backing: z.union([z.literal(''), NameSchema]),
      backingFormat: FormatNameSchema.optional(),
      unsafe: z.boolean().default(false),
      acceptBase: z.boolean().default(false),
    }),
    z.object({
      overlay: z.string(),
      oldBacking: z.string().nullable(),
      newBacking: z.string().nullable(),
      newBackingPath: z.string().nullable(),
      newBackingFormat: z.string().nullable(),
      copiedClusters: CountSchema,
      comparedBytes: ByteCountSchema,
      unsafe: z.boolean(),
    }),
  ),
  [CHANNELS.operationsResetOverlay]: job(
    'Reset an overlay to its base (`addcow reset`): every cluster it holds is thrown away, its names kept; BUSY while served. `dryRun` only says what would be lost.',
    z.strictObject({ overlay: AbsolutePathSchema, dryRun: z.boolean().default(false) }),
    ResetResultSchema,
  ),
  [CHANNELS.qemuGetCommand]: call(
    'The QEMU command line for an image, each option explained (`addcow qemu-cmd`).',
    z.strictObject(QemuRequestFields),
    QemuCommandSchema,
  ),
  [CHANNELS.qemuExportCommand]: call(
    'The same machine as a POSIX sh script that starts the export and QEMU, or as a libvirt domain (`addcow qemu-cmd --script|--libvirt`).',
    z.strictObject({ ...QemuRequestFields, as: z.enum(['script', 'libvirt']) }),
    z.object({ text: z.string(), fileName: z.string() }),
  ),
  [CHANNELS.qemuLaunchVm]: job(
    'Run QEMU on an image (`addcow launch`); its console arrives as qemu:console-output events; ends when QEMU exits.',
    z.strictObject(QemuRequestFields),
    VmResultSchema,
  ),
  [CHANNELS.qemuGetCapabilities]: call(
    "What this host's QEMU supports: displays, machine types, the add-cow driver, UEFI, KVM.",
    EmptyRequestSchema,
    QemuCapabilitiesSchema,
  ),
  [CHANNELS.qemuSnapshotVm]: job(
    "Live snapshot of a running VM (issue 17): the top it writes is frozen and a new empty overlay served on it, the guest never stopped; the reply says the new top and the pause. NOT_CAPABLE unless the VM runs through the app's NBD export.",
    z.strictObject({
      jobId: z.string().min(1).max(64),
      /** The new top's file (relative: beside the served top); default `<top>-snapN.add-cow`. */
      name: NameSchema.optional(),
    }),
    liveSnapshotResultSchema,
  ),
  [CHANNELS.qemuFlattenVm]: job(
    "Live flatten of a running VM's disk (issue 17): the chain streamed into the served top while the guest writes (`rate` bytes per second at most), then ALL_ALLOCATED and the export reads only its image file. Cancel keeps what was copied. BUSY while another live job runs on it.",
    liveFlattenArgsSchema.extend({ jobId: VmJobIdSchema }),
    liveFlattenResultSchema,
  ),
  [CHANNELS.qemuCommitVm]: job(
    "Live commit on a running VM's disk (issue 17): layer 0 (the served top, active commit: the export goes on with the base) or a layer below it into its base, with offline commit's blast-radius rule (CONFIRMATION_REQUIRED unless `force`). BUSY while another live job runs on it.",
    liveCommitArgsSchema.extend({ jobId: VmJobIdSchema }),
    liveCommitResultSchema,
  ),
  [CHANNELS.qemuGetLiveStatus]: call(
    "What a running VM's export serves now (`addcow job status`): its top and chain, its live jobs, copy-on-read and its failed copies.",
    z.strictObject({ jobId: VmJobIdSchema }),
    liveStatusSchema,
  ),
  [CHANNELS.qemuGetLiveCommitRadius]: call(
    "The blast radius of a live commit of layer `layer` of a running VM's served chain into the layer below it: the images that read through that base (as image:get-blast-radius for an offline commit).",
    z.strictObject({ jobId: VmJobIdSchema, layer: z.number().int().min(0).max(63) }),
    BlastRadiusSchema,
  ),
  [CHANNELS.machinesListMachines]: call(
    'The saved machines of the library file (the ones `addcow machine list` shows), each with its running VM job; entries broken by hand are named in `problems`.',
    EmptyRequestSchema,
    z.object({ machines: z.array(MachineViewSchema), problems: z.array(z.string()) }),
  ),
  [CHANNELS.machinesSaveMachine]: call(
    'Save a machine (`addcow machine save`): ALREADY_EXISTS for a name in use unless `replace`; `previousName` renames.',
    z.strictObject({
      machine: SavedMachineSchema,
      previousName: MachineNameSchema.optional(),
      replace: z.boolean().default(false),
    }),
    z.object({ machine: SavedMachineSchema }),
  ),
  [CHANNELS.machinesCopyMachine]: call(
    'Duplicate a machine under a new name (`addcow machine copy`).',
    z.strictObject({ name: MachineNameSchema, newName: MachineNameSchema }),
    z.object({ machine: SavedMachineSchema }),
  ),
  [CHANNELS.machinesRemoveMachine]: call(
    'Remove a saved machine (`addcow machine rm`); its disk and files are untouched. BUSY while it runs.',
    z.strictObject({ name: MachineNameSchema }),
    z.object({ removed: z.string() }),
  ),
  [CHANNELS.machinesGetCommand]: call(
    "The QEMU command line a machine's start runs (`addcow machine cmd`), each option explained.",
    z.strictObject({ name: MachineNameSchema, acceptBase: z.boolean().default(false) }),
    QemuCommandSchema,
  ),
  [CHANNELS.machinesStartMachine]: job(
    'Start a saved machine (`addcow machine start`): a VM job like qemu:launch-vm, stopped with qemu:stop-vm.',
    z.strictObject({
      name: MachineNameSchema,
      discardChanges: z.boolean().default(false),
      acceptBase: z.boolean().default(false),
    }),
    VmResultSchema,
  ),
  [CHANNELS.qemuStopVm]: call(
    'Power a launched VM down (ACPI, then quit, then kill), or with `force` pull the plug (QMP quit, then kill); its job ends when QEMU has exited.',
    z.strictObject({ jobId: z.string().min(1).max(64), force: z.boolean().default(false) }),
    z.object({ stopping: z.boolean() }),
  ),
  [CHANNELS.qemuPowerVm]: call(
    "A launched VM's power controls through QMP: shut down (the ACPI button; the guest decides), pause, resume, reset. Answers the state after the command.",
    z.strictObject({
      jobId: z.string().min(1).max(64),
      action: z.enum(['shut-down', 'pause', 'resume', 'reset']),
    }),
    z.object({ state: VmStateSchema }),
  ),
  [CHANNELS.qemuWriteConsole]: call(
    "Type into a launched VM's serial console.",
    z.strictObject({ jobId: z.string().min(1).max(64), text: z.string().min(1).max(4096) }),
    z.object({ written: CountSchema }),
  ),
  [CHANNELS.qemuGetConsole]: call(
    "What a launched VM's console printed so far (its last 256 KiB) and its run state: what a page shows when it opens on a VM that runs already (a reload, another window).",
    z.strictObject({ jobId: z.string().min(1).max(64) }),
    z.object({
      chunks: z.array(
        z.object({ stream: z.enum(['stdout', 'stderr', 'serial']), text: z.string() }),
      ),
      state: VmStateSchema.nullable(),
    }),
  ),
  [CHANNELS.nbdServeImage]: job(
    "Serve an image's guest view over NBD (`addcow serve`) on a Unix socket or loopback TCP, until stopped.",
    z.strictObject({
      path: AbsolutePathSchema,
      socket: AbsolutePathSchema.optional(),
      port: z.number().int().min(0).max(65535).optional(),
      exportName: z.string().max(4096).default(''),
      readOnly: z.boolean().default(false),
      acceptBase: z.boolean().default(false),
    }),
    z.object({ uri: z.string() }),
  ),
  [CHANNELS.nbdStopExport]: call(
    'Stop an NBD export: requests in flight finish, the image is flushed and closed.',
    JobIdRequestSchema,
    z.object({ stopping: z.boolean() }),
  ),
  [CHANNELS.fsListFolder]: call(
    "List a folder for the in-app file browser (main's file system, not the browser's).",
    z.strictObject({ path: AbsolutePathSchema, showHidden: z.boolean().default(false) }),
    z.object({
      path: z.string(),
      parent: z.string().nullable(),
      entries: z.array(
        z.object({
          name: z.string(),
          path: z.string(),
          kind: z.enum(['folder', 'file', 'other']),
          link: z.boolean(),
          size: ByteCountSchema.nullable(),
          modifiedAt: z.number().nullable(),
          /** Set on the image file of an add-cow overlay in the same folder: the overlay's name. */
          imageFileOf: z.string().optional(),
        }),
      ),
      truncated: z.boolean(),
    }),
  ),
  [CHANNELS.fsListRoots]: call(
    'Where the in-app file browser starts: home, file system roots, the temporary folder.',
    EmptyRequestSchema,
    z.object({
      home: z.string(),
      separator: z.enum(['/', '\\']),
      places: z.array(z.object({ label: z.string(), path: z.string() })),
    }),
  ),
  [CHANNELS.fsShowOpenDialog]: call(
    'Native open dialog (Electron only; NOT_CAPABLE in the browser, which uses the in-app browser).',
    z.strictObject({
      title: z.string().max(200).optional(),
      multiple: z.boolean().default(false),
      defaultPath: AbsolutePathSchema.optional(),
      filters: z.array(FileFilterSchema).max(16).optional(),
    }),
    z.object({ paths: z.array(z.string()) }),
  ),
  [CHANNELS.fsShowSaveDialog]: call(
    'Native save dialog (Electron only; NOT_CAPABLE in the browser). null when cancelled.',
    z.strictObject({
      title: z.string().max(200).optional(),
      defaultPath: AbsolutePathSchema.optional(),
      filters: z.array(FileFilterSchema).max(16).optional(),
    }),
    z.object({ path: z.string().nullable() }),
  ),
  [CHANNELS.fsShowInFolder]: call(
    "Show a file in the system's file manager (Electron); `shown: false` where there is none (the browser mode shows the path).",
    z.strictObject({ path: AbsolutePathSchema }),
    z.object({ shown: z.boolean() }),
  ),
  [CHANNELS.jobsListJobs]: call(
    'Every running job and the most recent finished ones, oldest first.',
    EmptyRequestSchema,
    z.object({ jobs: z.array(JobInfoSchema) }),
  ),
  [CHANNELS.jobsCancelJob]: call(
    'Ask a running job to stop; it leaves its files consistent and ends as cancelled.',
    z.strictObject({ jobId: z.string().min(1).max(64) }),
    z.object({ cancelled: z.boolean(), job: JobInfoSchema }),
  ),
  [CHANNELS.jobsClearFinished]: call(
    'Forget finished, failed and cancelled jobs.',
    EmptyRequestSchema,
    z.object({ removed: z.number().int().min(0) }),
  ),
  [CHANNELS.appGetInfo]: call(
    'Version, platform, data folder, and whether this is the Electron app or the browser mode.',
    EmptyRequestSchema,
    z.object({
      name: z.string(),
      version: z.string(),
      shell: z.enum(['electron', 'web']),
      platform: z.string(),
      arch: z.string(),
      dataDir: z.string(),
      libraryFile: z.string(),
      home: z.string(),
      nativeDialogs: z.boolean(),
      versions: z.object({
        node: z.string(),
        electron: z.string().nullable(),
        chrome: z.string().nullable(),
      }),
    }),
  ),
} as const satisfies { readonly [C in Channel]: ChannelSpec }

/** The schema of every event's payload. */
export const EVENT_CONTRACT = {
  [EVENTS.jobStarted]: JobInfoSchema,
  [EVENTS.jobProgress]: JobInfoSchema,
  [EVENTS.jobDone]: z.object({ job: JobInfoSchema, result: z.unknown() }),
  [EVENTS.jobFailed]: z.object({ job: JobInfoSchema }),
  [EVENTS.libraryChanged]: z.object({
    reason: z.enum([
      'added',
      'removed',
      'created',
      'approved',
      'dropped',
      'opened',
      'modified',
      'summarized',
    ]),
    paths: z.array(z.string()),
  }),
  [EVENTS.menuCommand]: z.object({
    command: z.enum(['open-image', 'create-overlay', 'show-library', 'show-jobs']),
  }),
  [EVENTS.filesDropped]: z.object({ paths: z.array(z.string()) }),
  [EVENTS.consoleOutput]: z.object({
    sessionId: z.string(),
    stream: z.enum(['stdout', 'stderr', 'serial']),
    text: z.string(),
  }),
  /**
   * A launched VM's run state changed (sessionId = the launch job's id); `screen`: it has the
   * in-app display (its screen can be opened), whoever launched it.
   */
  [EVENTS.vmState]: z.object({ sessionId: z.string(), state: VmStateSchema, screen: z.boolean() }),
} as const satisfies { readonly [E in EventName]: z.ZodType }

/** The whole contract's type. */
export type Contract = typeof CONTRACT

/** Channels that reply with a value. */
export type CallChannel = {
  [C in Channel]: Contract[C] extends { kind: 'call' } ? C : never
}[Channel]

/** Channels that start a job. */
export type JobChannel = {
  [C in Channel]: Contract[C] extends { kind: 'job' } ? C : never
}[Channel]

/** What the renderer sends on a channel (defaults not yet applied). */
export type RequestOf<C extends Channel> = z.input<Contract[C]['request']>

/** What a handler receives on a channel (validated, defaults applied). */
export type ParsedRequestOf<C extends Channel> = z.output<Contract[C]['request']>

/** A job's immediate reply. */
export type JobStarted = z.output<typeof JobStartedSchema>

/** What a channel replies: its response, or {@link JobStarted} for a job channel. */
export type ResponseOf<C extends Channel> =
  Contract[C] extends CallSpec<z.ZodType, infer Response> ? z.output<Response> : JobStarted

/** The final result of a job channel, carried by the `jobs:done` event. */
export type JobResultOf<C extends JobChannel> =
  Contract[C] extends JobSpec<z.ZodType, infer Result> ? z.output<Result> : never

/** An event's payload. */
export type EventPayload<E extends EventName> = z.output<(typeof EVENT_CONTRACT)[E]>

/** A job as the jobs list and the job events describe it. */
export type JobInfo = z.output<typeof JobInfoSchema>

/** A job's state. */
export type JobState = z.output<typeof JobStateSchema>

/** One image of the library. */
export type ImageSummary = z.output<typeof ImageSummarySchema>

/** The schema of what a channel replies (JobStartedSchema for job channels). */
export function responseSchemaOf(channel: Channel): z.ZodType {
  const spec: ChannelSpec = CONTRACT[channel]
  return spec.kind === 'call' ? spec.response : JobStartedSchema
}

/** Whether a channel starts a job. */
export function isJobChannel(channel: Channel): channel is JobChannel {
  return CONTRACT[channel].kind === 'job'
}

/** Every job channel. */
export const JOB_CHANNELS: readonly JobChannel[] = CHANNEL_NAMES.filter(isJobChannel)
