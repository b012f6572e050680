import { isAbsolutePath, type RequestOf } from '../../../shared/ipc/contract'
import { baseName, folderOf, formatBytes, parseSizeText } from '../composables/use-format'
import { joinPath, leavesFolder, relativePath } from './paths'

/**
 * The create-overlay wizard's logic without Vue: default file names, the names as they will be
 * stored (relative to the overlay's folder or absolute), the request for operations:create-overlay,
 * the equivalent `addcow create` command line, and what each step still needs.
 */

/** How the overlay stores the names of its base and of its image file. */
export type NameStyle = 'relative' | 'absolute'

/** Everything the wizard asks. Paths are absolute (main's file system). */
export interface CreateOverlayDraft {
  base: string
  /** The base's format, as image:get-info read it (stored in the overlay, never probed again). */
  baseFormat: string | null
  /** The base's virtual size, for the default size and the bitmap estimate. */
  baseSize: number | null
  overlay: string
  image: string
  nameStyle: NameStyle
  /** Virtual size as typed; empty means the base's size. */
  sizeText: string
  clusterSize: number
}

/** One choice of cluster size. */
export interface ClusterChoice {
  value: number
  label: string
}

/** The cluster sizes the wizard offers (the format allows every power of two in 4 KiB..2 MiB). */
export const CLUSTER_CHOICES: readonly ClusterChoice[] = [4, 16, 64, 256, 1024, 2048].map(
  (kib) => ({ value: kib * 1024, label: kib >= 1024 ? `${kib / 1024} MiB` : `${kib} KiB` }),
)

/** The cluster size `addcow create` uses when none is given. */
export const DEFAULT_CLUSTER_SIZE = 64 * 1024

/** The one-line trade-off of cluster sizes, shown beside the choice. */
export const CLUSTER_TRADE_OFF =
  'Smaller clusters copy less of the base on a first write and keep the image file tight; larger clusters keep the bitmap small and long sequential writes fast.'

/** The largest add-cow bitmap the engine accepts (main/engine, MAX_BITMAP_BYTES). */
export const MAX_BITMAP_BYTES = 512 * 1024 * 1024

/** The overlay proposed for a base: `folder/name-overlay.add-cow` beside it. */
export function proposeOverlayPath(base: string): string {
  const name = baseName(base).replace(/\.[^.]+$/, '')
  return joinPath(folderOf(base), `${name || 'disk'}-overlay.add-cow`)
}

/** The image file proposed for an overlay: `x.add-cow` → `x.raw` beside it, as the CLI does. */
export function proposeImagePath(overlay: string): string {
  const name = baseName(overlay)
  const image = name.endsWith('.add-cow')
    ? `${name.slice(0, -'.add-cow'.length)}.raw`
    : `${name}.raw`
  return joinPath(folderOf(overlay), image)
}

/** How a file's name will be stored in the overlay, and whether it leaves the overlay's folder. */
export interface StoredName {
  stored: string
  /** Relative was asked but the file is on another drive or share: stored absolute. */
  forcedAbsolute: boolean
  /** A relative name climbing out of the overlay's folder (`../base.img`). */
  leavesFolder: boolean
}

/** The name the overlay stores for `target`, in the chosen style. */
export function storedName(target: string, overlay: string, style: NameStyle): StoredName {
  if (style === 'absolute') return { stored: target, forcedAbsolute: false, leavesFolder: false }
  const relative = relativePath(folderOf(overlay), target)
  if (relative === null) return { stored: target, forcedAbsolute: true, leavesFolder: false }
  return { stored: relative, forcedAbsolute: false, leavesFolder: leavesFolder(relative) }
}

/** The virtual size asked (bytes), undefined for the base's size, null when the text is no size. */
export function sizeOf(draft: Pick<CreateOverlayDraft, 'sizeText'>): number | undefined | null {
  const text = draft.sizeText.trim()
  if (text === '') return undefined
  return parseSizeText(text)
}

/** The size the overlay will have: the one asked, else the base's. */
export function effectiveSize(draft: CreateOverlayDraft): number | null {
  const size = sizeOf(draft)
  if (size === null) return null
  return size ?? draft.baseSize
}

/** Bytes of the add-cow bitmap for a size and cluster size (one bit per cluster). */
export function bitmapBytes(size: number, clusterSize: number): number {
  return Math.ceil(Math.ceil(size / clusterSize) / 8)
}

/** The request for operations:create-overlay. */
export function createRequest(draft: CreateOverlayDraft): RequestOf<'operations:create-overlay'> {
  const size = sizeOf(draft)
  return {
    overlay: draft.overlay,
    backing: storedName(draft.base, draft.overlay, draft.nameStyle).stored,
    ...(draft.baseFormat ? { backingFormat: draft.baseFormat } : {}),
    image: storedName(draft.image, draft.overlay, draft.nameStyle).stored,
    ...(size !== undefined && size !== null ? { size } : {}),
    clusterSize: draft.clusterSize,
  }
}

/** A size as the CLI reads it: `64K`, `16M`, `10G` when exact, else bytes. */
export function sizeArgument(bytes: number): string {
  const units: [string, number][] = [
    ['T', 1024 ** 4],
    ['G', 1024 ** 3],
    ['M', 1024 ** 2],
    ['K', 1024],
  ]
  for (const [suffix, unit] of units) {
    if (bytes >= unit && bytes % unit === 0) return `${bytes / unit}${suffix}`
  }
  return String(bytes)
}

/** Quote one argument for a POSIX shell (only when it needs it). */
export function shellQuote(argument: string): string {
  if (argument !== '' && /^[A-Za-z0-9_@%+=:,./-]+$/.test(argument)) return argument
  return `'${argument.replace(/'/g, `'\\''`)}'`
}

/** The `addcow create` arguments that do what the request does. */
export function createArguments(request: RequestOf<'operations:create-overlay'>): string[] {
  const args = ['addcow', 'create']
  if (request.backing !== undefined) args.push('-b', request.backing)
  if (request.backingFormat !== undefined) args.push('-F', request.backingFormat)
  if (request.image !== undefined) args.push('-i', request.image)
  if (request.size !== undefined) args.push('-s', sizeArgument(request.size))
  if (request.clusterSize !== undefined) args.push('-c', sizeArgument(request.clusterSize))
  args.push(request.overlay)
  return args
}

/** The command line a person can paste into a shell. */
export function createCommandLine(request: RequestOf<'operations:create-overlay'>): string {
  return createArguments(request).map(shellQuote).join(' ')
}

/** The wizard's steps, in order. */
export const STEPS = ['base', 'files', 'clusters', 'review'] as const

/** One step of the wizard. */
export type StepName = (typeof STEPS)[number]

/**
 * What keeps the user on a step: a sentence naming the value at fault and what to do, or null
 * when the step is complete. `baseError` is the reason the base could not be read, if any.
 */
export function stepProblem(
  step: StepName,
  draft: CreateOverlayDraft,
  baseError: string | null,
): string | null {
  if (step === 'base') {
    if (draft.base.trim() === '') return 'Choose the base image: type its full path or use Browse.'
    if (!isAbsolutePath(draft.base))
      return `“${draft.base}” is not a full path: start it with / (or a drive letter).`
    if (baseError !== null) return baseError
    if (draft.baseFormat === null) return `Reading ${draft.base}…`
    return null
  }
  if (step === 'files') {
    if (!isAbsolutePath(draft.overlay))
      return `“${draft.overlay || '(empty)'}” is not a full path for the overlay: choose where to save it.`
    if (!draft.overlay.endsWith('.add-cow'))
      return `The overlay ${draft.overlay} should end in .add-cow, so tools recognise it.`
    if (!isAbsolutePath(draft.image))
      return `“${draft.image || '(empty)'}” is not a full path for the image file.`
    if (draft.image === draft.overlay)
      return `The image file cannot be the overlay itself (${draft.overlay}): choose another name.`
    if (draft.image === draft.base || draft.overlay === draft.base)
      return `${draft.base} is the base: the overlay and its image file need new names.`
    const size = sizeOf(draft)
    if (size === null)
      return `“${draft.sizeText}” is not a size: write for example 20G or 512M, or leave it empty for the base's size.`
    return null
  }
  if (step === 'clusters') {
    const size = effectiveSize(draft)
    if (size !== null && bitmapBytes(size, draft.clusterSize) > MAX_BITMAP_BYTES)
      return `With ${formatBytes(draft.clusterSize)} clusters the bitmap of a ${formatBytes(size)} disk is over ${formatBytes(MAX_BITMAP_BYTES)}: choose larger clusters.`
    return null
  }
  return null
}
