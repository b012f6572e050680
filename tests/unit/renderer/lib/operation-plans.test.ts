import { describe, expect, it } from 'vitest'
import { CHANNELS } from '../../../../shared/ipc/channels'
import type { ImageSummary } from '../../../../shared/ipc/contract'
import type { IpcClient } from '../../../../renderer/src/api/client'
import {
  imageSuits,
  planCommit,
  planFlatten,
  readCommitReview,
  readFlattenPlan,
  readRebaseStart,
  type Allocation,
  type ImageLayerInfo,
} from '../../../../renderer/src/lib/operation-plans'

// What the commit and flatten wizards show before they start: clusters and bytes, from the
// chain's info and the allocation summed per depth.

const MIB = 1024 * 1024

const OVERLAY: ImageLayerInfo = {
  filename: '/images/vm.add-cow',
  format: 'add-cow',
  'virtual-size': 16 * MIB,
  'actual-size': 65536,
  'cluster-size': 65536,
  'full-data-file': '/images/vm.raw',
  'allocated-clusters': 2,
  'total-clusters': 256,
  'all-allocated': false,
  'backing-filename': 'base.raw',
  'full-backing-filename': '/images/base.raw',
  'backing-filename-format': 'raw',
}
const BASE: ImageLayerInfo = {
  filename: '/images/base.raw',
  format: 'raw',
  'virtual-size': 8 * MIB,
  'actual-size': 4096,
}

function allocation(present: number[], zero: number): Allocation {
  return {
    virtualSize: 16 * MIB,
    clusterSize: 64 * 1024,
    offset: 0,
    length: 16 * MIB,
    bucketSize: 16 * MIB,
    layers: [],
    buckets: [{ present, zero }],
    totals: { present, zero },
  }
}

describe('planCommit', () => {
  it('counts the overlay’s own clusters and bytes, and sees the base grow', () => {
    expect(planCommit([OVERLAY, BASE], allocation([131072, 3 * MIB], 13 * MIB - 131072))).toEqual({
      overlay: '/images/vm.add-cow',
      base: '/images/base.raw',
      baseFormat: 'raw',
      clusterSize: 65536,
      clusters: 2,
      bytes: 131072,
      virtualSize: 16 * MIB,
      baseGrowsFrom: 8 * MIB,
      flattened: false,
    })
  })

  it('commits every cluster of a flattened overlay', () => {
    const flat = { ...OVERLAY, 'all-allocated': true, 'allocated-clusters': 256 }
    const plan = planCommit(
      [flat, { ...BASE, 'virtual-size': 16 * MIB }],
      allocation([16 * MIB], 0),
    )
    expect(plan).toMatchObject({
      clusters: 256,
      bytes: 16 * MIB,
      flattened: true,
      baseGrowsFrom: null,
    })
  })
})

describe('planFlatten', () => {
  it('counts what the chain below still provides, and the zeros it will not write', () => {
    expect(planFlatten([OVERLAY, BASE], allocation([131072, 3 * MIB], 13 * MIB - 131072))).toEqual({
      overlay: '/images/vm.add-cow',
      imageFile: '/images/vm.raw',
      base: '/images/base.raw',
      clusterSize: 65536,
      totalClusters: 256,
      clustersFromChain: 254,
      bytesFromChain: 3 * MIB,
      zeroBytes: 13 * MIB - 131072,
      virtualSize: 16 * MIB,
      alreadyFlat: false,
    })
  })

  it('sees an overlay that is already flat', () => {
    const flat = { ...OVERLAY, 'all-allocated': true }
    expect(planFlatten([flat], allocation([16 * MIB], 0))).toMatchObject({
      clustersFromChain: 0,
      bytesFromChain: 0,
      alreadyFlat: true,
    })
  })
})

describe('imageSuits', () => {
  const summary = (format: string | null, base: ImageSummary['base']['status']): ImageSummary => ({
    path: '/images/x',
    name: 'x',
    addedAt: '',
    format,
    virtualSize: null,
    diskUsage: null,
    files: [],
    clusterSize: null,
    allocatedPercent: null,
    base: { status: base, stored: null, path: null, reason: null },
    chainLength: 1,
    dependents: [],
    loop: null,
    error: null,
  })

  it('offers every readable image, add-cow images, or overlays with a base', () => {
    expect(imageSuits(summary('raw', 'none'), 'any')).toBe(true)
    expect(
      imageSuits({ ...summary(null, 'none'), error: { code: 'NOT_FOUND', message: 'x' } }, 'any'),
    ).toBe(false)
    expect(imageSuits(summary('raw', 'none'), 'add-cow')).toBe(false)
    expect(imageSuits(summary('add-cow', 'none'), 'add-cow')).toBe(true)
    expect(imageSuits(summary('add-cow', 'none'), 'overlay')).toBe(false)
    expect(imageSuits(summary('add-cow', 'ok'), 'overlay')).toBe(true)
    expect(imageSuits(summary('add-cow', 'missing'), 'overlay')).toBe(true)
  })
})

describe('the plan readers', () => {
  /** A client that answers from a table and records what it was asked. */
  function client(answers: Record<string, unknown>) {
    const asked: [string, unknown][] = []
    return {
      asked,
      call: async (channel: string, request: unknown) => {
        asked.push([channel, request])
        if (!(channel in answers)) throw new Error(`unexpected ${channel}`)
        return answers[channel]
      },
    } as unknown as IpcClient & { asked: [string, unknown][] }
  }
  const {
    imageGetInfo: INFO,
    imageGetAllocation: ALLOCATION,
    imageGetBlastRadius: RADIUS,
  } = CHANNELS
  const radius = {
    overlay: '/images/vm.add-cow',
    base: '/images/base.raw',
    dependents: [],
    unchecked: [],
    searched: [],
    truncated: [],
  }

  it('reads a commit plan and its blast radius together', async () => {
    const fake = client({
      [INFO]: { layers: [OVERLAY, BASE] },
      [ALLOCATION]: allocation([131072, 3 * MIB], 13 * MIB - 131072),
      [RADIUS]: radius,
    })
    const review = await readCommitReview(fake, '/images/vm.add-cow')
    expect(review.plan).toMatchObject({ clusters: 2, bytes: 131072, baseGrowsFrom: 8 * MIB })
    expect(review.radius).toBe(radius)
    expect(fake.asked).toEqual([
      [INFO, { path: '/images/vm.add-cow', backingChain: true }],
      [ALLOCATION, { path: '/images/vm.add-cow', buckets: 1 }],
      [RADIUS, { overlay: '/images/vm.add-cow' }],
    ])
  })

  it('reads a flatten plan, and the layer a rebase starts from', async () => {
    const fake = client({
      [INFO]: { layers: [OVERLAY, BASE] },
      [ALLOCATION]: allocation([131072, 3 * MIB], 13 * MIB - 131072),
    })
    expect(await readFlattenPlan(fake, '/images/vm.add-cow')).toMatchObject({
      clustersFromChain: 254,
    })
    expect(await readRebaseStart(fake, '/images/vm.add-cow')).toBe(OVERLAY)
    expect(fake.asked.at(-1)).toEqual([INFO, { path: '/images/vm.add-cow', backingChain: false }])
  })
})
