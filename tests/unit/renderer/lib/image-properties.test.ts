import { describe, expect, it } from 'vitest'
import { propertyRows } from '../../../../renderer/src/lib/image-properties'

// The Properties panel's reading of `info` (renderer/src/lib/image-properties.ts).

describe('propertyRows', () => {
  it("names each file's size on disk apart, groups the cluster counts, and says how each name resolved", () => {
    const rows = propertyRows({
      filename: '/vms/dev.add-cow',
      format: 'add-cow',
      'virtual-size': 64 * 1024 * 1024,
      'actual-size': 65536,
      'cluster-size': 65536,
      'data-file': 'dev.raw',
      'data-file-actual-size': 3 * 65536,
      'allocated-clusters': 3,
      'total-clusters': 16777216,
      'backing-filename': 'golden.img',
      'backing-filename-format': 'raw',
      names: [
        {
          stored: 'golden.img',
          resolved: '/vms/golden.img',
          format: 'raw',
          followed: true,
          reason: 'inside-folder',
        },
      ],
    })
    const table = Object.fromEntries(rows.map((row) => [row.label, row.value]))
    expect(table).toMatchObject({
      'add-cow file on disk': '64 KiB',
      'Image file on disk': '192 KiB',
      'Both files on disk': '256 KiB',
      'Clusters written here': `3 of ${new Intl.NumberFormat().format(16777216)}`,
      'Base as stored': 'golden.img (raw)',
      'Name followed': 'golden.img → /vms/golden.img (in the folder of the file that names it)',
    })
    expect(rows.find((row) => row.label === 'Image file on disk')?.exact).toBe(
      `${new Intl.NumberFormat().format(196608)} bytes`,
    )
  })
})
