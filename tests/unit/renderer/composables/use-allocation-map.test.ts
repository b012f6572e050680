// @vitest-environment happy-dom
import { beforeAll, describe, expect, it } from 'vitest'
import { ref } from 'vue'
import { useAllocationMap } from '../../../../renderer/src/composables/use-allocation-map'
import { installFakeMain, settle, type FakeMain } from '../helpers/fake-main'
import { KIB, MIB } from '../helpers/fixtures'

// Opening the allocation map asks main once (issue 15): the whole disk's sums carry the image's
// size and cluster size, with no image:get-info first (a second open of the image and a round
// trip on every click). A disk with fewer clusters than cells is asked again, a cell a cluster.

const TIB = 1024 ** 4
/** The images the fake main knows: virtual size and cluster size. */
const IMAGES: Record<string, { size: number; cluster: number }> = {
  '/vm/huge.add-cow': { size: TIB, cluster: 64 * KIB },
  '/vm/tiny.add-cow': { size: MIB, cluster: 64 * KIB },
}

let main: FakeMain

beforeAll(() => {
  main = installFakeMain()
  main.handle('imageGetAllocation', (request) => {
    const {
      path,
      buckets,
      offset = 0,
      length,
    } = request as {
      path: string
      buckets: number
      offset?: number
      length?: number
    }
    const image = IMAGES[path]!
    const span = length ?? image.size - offset
    const bucketSize = Math.ceil(span / buckets)
    const count = Math.ceil(span / bucketSize)
    return {
      virtualSize: image.size,
      clusterSize: image.cluster,
      offset,
      length: span,
      bucketSize,
      layers: [{ depth: 0, path, format: 'add-cow' }],
      buckets: Array.from({ length: count }, () => ({ present: [0], zero: bucketSize })),
      totals: { present: [0], zero: span, holes: [0] },
    }
  })
})

describe('useAllocationMap', () => {
  it('opens a 1 TiB image with one request for the whole disk, and no info call', async () => {
    const before = main.calls.length
    const map = useAllocationMap(ref('/vm/huge.add-cow'))
    map.cells.value = 1380
    await settle()
    expect(main.calls.slice(before)).toEqual([
      { key: 'imageGetAllocation', request: { path: '/vm/huge.add-cow', buckets: 1380 } },
    ])
    expect(map.shape.value).toEqual({ virtualSize: TIB, clusterSize: 64 * KIB })
    expect(map.allocation.value?.buckets).toHaveLength(1380)
    expect(map.whole.value).toBe(map.allocation.value)
    expect(map.loading.value).toBe(false)
  })

  it('asks again for a disk with fewer clusters than cells: a cell is never under a cluster', async () => {
    const before = main.calls.length
    const map = useAllocationMap(ref('/vm/tiny.add-cow'))
    map.cells.value = 1380
    await settle()
    expect(main.calls.slice(before).map((call) => call.request)).toEqual([
      { path: '/vm/tiny.add-cow', buckets: 1380 },
      { path: '/vm/tiny.add-cow', offset: 0, length: MIB, buckets: 16 },
    ])
    expect(map.allocation.value?.bucketSize).toBe(64 * KIB)
    expect(map.allocation.value?.buckets).toHaveLength(16)
    expect(map.loading.value).toBe(false)
  })
})
