import { describe, expect, it } from 'vitest'
import type { ImageSummary } from '../../../../shared/ipc/contract'
import {
  compareNames,
  compareNumbers,
  filterImages,
  needsAttention,
  parseSort,
  sortValue,
} from '../../../../renderer/src/lib/library-view'

// The library's search, filter and sort (renderer/src/lib/library-view.ts).

function image(name: string, fields: Partial<ImageSummary> = {}): ImageSummary {
  return {
    path: `/vms/${name}`,
    name,
    addedAt: '2026-12-05T10:00:00.000Z',
    format: name.endsWith('.add-cow') ? 'add-cow' : 'raw',
    virtualSize: 1024,
    diskUsage: 1024,
    files: [],
    clusterSize: null,
    allocatedPercent: null,
    base: { status: 'none', stored: null, path: null, reason: null },
    chainLength: 1,
    dependents: [],
    error: null,
    loop: null,
    ...fields,
  }
}

const GOLDEN = image('golden.img', { dependents: ['/vms/dev.add-cow'] })
const DEV = image('dev.add-cow', {
  allocatedPercent: 0.01,
  base: { status: 'ok', stored: 'golden.img', path: '/vms/golden.img', reason: null },
})
const LOST = image('lost.add-cow', {
  allocatedPercent: 3,
  base: { status: 'missing', stored: 'gone.img', path: '/vms/gone.img', reason: 'missing' },
})
const ALL = [GOLDEN, DEV, LOST]

describe('filterImages', () => {
  it('keeps the images whose name or path holds every word, whatever the case', () => {
    expect(filterImages(ALL, 'DEV', 'all')).toEqual([DEV])
    expect(filterImages(ALL, 'vms add-cow', 'all')).toEqual([DEV, LOST])
    expect(filterImages(ALL, '  ', 'all')).toEqual(ALL)
    expect(filterImages(ALL, 'nothing', 'all')).toEqual([])
  })

  it('filters overlays, bases and the images that need attention', () => {
    expect(filterImages(ALL, '', 'overlays')).toEqual([DEV, LOST])
    expect(filterImages(ALL, '', 'bases')).toEqual([GOLDEN])
    expect(filterImages(ALL, '', 'problems')).toEqual([LOST])
    expect(
      needsAttention(image('broken.add-cow', { error: { code: 'CORRUPT_HEADER', message: 'x' } })),
    ).toBe(true)
  })
})

describe('sorting', () => {
  it('sorts names as people count and unknown numbers last', () => {
    const names = [image('disk10.img'), image('Disk2.img'), image('disk1.img')]
    expect(names.sort(compareNames).map((entry) => entry.name)).toEqual([
      'disk1.img',
      'Disk2.img',
      'disk10.img',
    ])
    expect([3, null, 1].sort(compareNumbers)).toEqual([1, 3, null])
  })
})

describe('the toolbar sort', () => {
  it('reads and writes the same sort as the column headers', () => {
    expect(parseSort('name:descend')).toEqual({ key: 'name', order: 'descend' })
    expect(parseSort('')).toBeNull()
    expect(parseSort('name:sideways')).toBeNull()
    expect(sortValue({ key: 'virtualSize', order: 'ascend' })).toBe('virtualSize:ascend')
    expect(sortValue(null)).toBe('')
  })
})
