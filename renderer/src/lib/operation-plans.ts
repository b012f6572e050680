import type { ImageSummary, ResponseOf } from '../../../shared/ipc/contract'
import type { IpcClient } from '../api/client'

/** One layer of `image:get-info`. */
export type ImageLayerInfo = ResponseOf<'image:get-info'>['layers'][number]
/** What `image:get-allocation` answers. */
export type Allocation = ResponseOf<'image:get-allocation'>

/** What a commit will write, read before it starts. */
export interface CommitPlan {
  overlay: string
  /** The base the clusters go into, as the overlay's chain resolves it. */
  base: string | null
  baseFormat: string | null
  clusterSize: number | null
  /** Clusters the overlay holds (the ones copied into the base). */
  clusters: number
  /** Bytes of guest data those clusters hold (the last one may be partial). */
  bytes: number
  virtualSize: number
  /** The base grows to the overlay's size when it is smaller (as qemu-img commit does). */
  baseGrowsFrom: number | null
  /** A flattened overlay hands over to a full bitmap first: every cluster is committed. */
  flattened: boolean
}

/**
 * Plan a commit from the overlay's chain info and its allocation: clusters and bytes in the
 * overlay's own layer (depth 0) are what the commit copies into the layer below.
 */
export function planCommit(layers: readonly ImageLayerInfo[], allocation: Allocation): CommitPlan {
  const top = layers[0]
  const below = layers[1]
  return {
    overlay: top?.filename ?? '',
    base: top?.['full-backing-filename'] ?? null,
    baseFormat: top?.['backing-filename-format'] ?? below?.format ?? null,
    clusterSize: top?.['cluster-size'] ?? null,
    clusters: top?.['all-allocated']
      ? (top['total-clusters'] ?? 0)
      : (top?.['allocated-clusters'] ?? 0),
    bytes: allocation.totals.present[0] ?? 0,
    virtualSize: allocation.virtualSize,
    baseGrowsFrom:
      below && below['virtual-size'] < allocation.virtualSize ? below['virtual-size'] : null,
    flattened: top?.['all-allocated'] === true,
  }
}

/** The other images on the base, which a commit changes (`image:get-blast-radius`). */
export type BlastRadius = ResponseOf<'image:get-blast-radius'>

/** What the commit wizard reads before it starts: the plan, and who else reads the base. */
export interface CommitReview {
  plan: CommitPlan
  radius: BlastRadius
}

/** Read a commit's plan and blast radius: the overlay's chain, allocation and base's users. */
export async function readCommitReview(client: IpcClient, path: string): Promise<CommitReview> {
  const [info, allocation, radius] = await Promise.all([
    client.call('image:get-info', { path, backingChain: true }),
    client.call('image:get-allocation', { path, buckets: 1 }),
    client.call('image:get-blast-radius', { overlay: path }),
  ])
  return { plan: planCommit(info.layers, allocation), radius }
}

/** What a flatten will copy, read before it starts. */
export interface FlattenPlan {
  overlay: string
  /** The raw image file that becomes a standalone disk. */
  imageFile: string | null
  base: string | null
  clusterSize: number | null
  totalClusters: number
  /** Clusters still read from the chain (the ones stream copies). */
  clustersFromChain: number
  /** Bytes of data the chain below holds for the overlay (copied). */
  bytesFromChain: number
  /** Bytes no layer holds (zeros: not written, holes punched). */
  zeroBytes: number
  virtualSize: number
  /** ALL_ALLOCATED already: nothing left to do. */
  alreadyFlat: boolean
}

/** Plan a flatten: what the layers below the overlay still provide. */
export function planFlatten(
  layers: readonly ImageLayerInfo[],
  allocation: Allocation,
): FlattenPlan {
  const top = layers[0]
  const total = top?.['total-clusters'] ?? 0
  const allocated = top?.['all-allocated'] ? total : (top?.['allocated-clusters'] ?? 0)
  return {
    overlay: top?.filename ?? '',
    imageFile: top?.['full-data-file'] ?? null,
    base: top?.['full-backing-filename'] ?? null,
    clusterSize: top?.['cluster-size'] ?? null,
    totalClusters: total,
    clustersFromChain: Math.max(0, total - allocated),
    bytesFromChain: allocation.totals.present.slice(1).reduce((sum, bytes) => sum + bytes, 0),
    zeroBytes: allocation.totals.zero,
    virtualSize: allocation.virtualSize,
    alreadyFlat: top?.['all-allocated'] === true,
  }
}

/** Read a flatten's plan: the overlay's chain and what each layer provides. */
export async function readFlattenPlan(client: IpcClient, path: string): Promise<FlattenPlan> {
  const [info, allocation] = await Promise.all([
    client.call('image:get-info', { path, backingChain: true }),
    client.call('image:get-allocation', { path, buckets: 1 }),
  ])
  return planFlatten(info.layers, allocation)
}

/** Read the overlay a rebase starts from: its own layer (current base, size). */
export async function readRebaseStart(client: IpcClient, path: string): Promise<ImageLayerInfo> {
  const info = await client.call('image:get-info', { path, backingChain: false })
  const top = info.layers[0]
  if (!top) throw new Error(`${path} has no layer to rebase.`)
  return top
}

/** Which library images an operation screen offers in its image picker. */
export type ImageFilter = 'any' | 'add-cow' | 'overlay'

/** Whether a library image suits a screen: any image, add-cow only, or add-cow with a base. */
export function imageSuits(image: ImageSummary, filter: ImageFilter): boolean {
  if (filter === 'any') return image.error === null
  if (image.format !== 'add-cow') return false
  return filter === 'add-cow' || image.base.status !== 'none'
}
