// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { beforeAll, describe, expect, it } from 'vitest'
import type { ImageInfo } from '../../../../shared/image-types'
import ChainGraphLayers from '../../../../renderer/src/components/ChainGraphLayers.vue'
import { stubMatchMedia } from '../helpers/dom'
import { KIB, MIB } from '../helpers/fixtures'

// The chain list shows every name as stored and as resolved, and where the chain stops.

beforeAll(stubMatchMedia)

describe('ChainGraphLayers', () => {
  const layers: ImageInfo[] = [
    {
      filename: '/vm/a.add-cow',
      format: 'add-cow',
      'virtual-size': 16 * MIB,
      'actual-size': 128 * KIB,
      'cluster-size': 64 * KIB,
      'backing-filename': 'golden.img',
      'full-backing-filename': '/vm/golden.img',
      'data-file': 'a.raw',
      'full-data-file': '/vm/a.raw',
      'allocated-clusters': 16,
      'total-clusters': 256,
      names: [
        {
          stored: 'a.raw',
          resolved: '/vm/a.raw',
          format: 'raw',
          followed: true,
          reason: 'inside-folder',
        },
        {
          stored: 'golden.img',
          resolved: '/vm/golden.img',
          format: 'raw',
          followed: true,
          reason: 'inside-folder',
        },
      ],
    },
    {
      filename: '/vm/golden.img',
      format: 'raw',
      'virtual-size': 16 * MIB,
      'actual-size': 6 * MIB,
    },
  ]

  it('lists the chain top to base with every name as stored and resolved', () => {
    const wrapper = mount(ChainGraphLayers, { props: { layers } })
    const items = wrapper.findAll('ol > li')
    expect(items).toHaveLength(2)
    expect(items[0]!.text()).toContain('Top')
    expect(items[0]!.text()).toContain('16 of 256 clusters')
    expect(items[1]!.text()).toContain('Base')
    const names = items[0]!.findAll('.names > li')
    // The base's name first, then the image file's.
    expect(names[0]!.text()).toContain('Base')
    expect(names[0]!.text()).toContain('golden.img')
    expect(names[0]!.text()).toContain('/vm/golden.img')
    expect(names[0]!.text()).toContain('Followed: it stays inside the folder')
    expect(names[1]!.text()).toContain('Image file')
    expect(wrapper.find('[role="note"]').exists()).toBe(false)
  })

  it('says where and why the chain stops at a name it does not follow', () => {
    const refused: ImageInfo = {
      ...layers[0]!,
      names: [
        {
          stored: 'golden.img',
          resolved: '/vm/golden.img',
          format: 'raw',
          followed: false,
          reason: 'outside-folder',
        },
      ],
    }
    const wrapper = mount(ChainGraphLayers, { props: { layers: [refused] } })
    expect(wrapper.text()).toContain('Not followed')
    expect(wrapper.find('[role="note"]').text()).toBe(
      'The chain stops here: the base name “golden.img” is not followed because it leaves the folder and the library does not trust it.',
    )
  })
})
