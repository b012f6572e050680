// @vitest-environment happy-dom
import { beforeAll, describe, expect, it } from 'vitest'
import { ref } from 'vue'
import { useImageChain } from '../../../../renderer/src/composables/use-image-chain'
import { installFakeMain, settle, type FakeMain } from '../helpers/fake-main'
import { MIB } from '../helpers/fixtures'

// The chain the chain browser shows under its graph: read through the client for the image
// on show, again on demand, and a failure said in one sentence that names the image.

let main: FakeMain

beforeAll(() => {
  main = installFakeMain()
  main.handle('imageGetInfo', (request) => {
    const { path } = request as { path: string }
    if (path.endsWith('gone.img')) throw { code: 'NOT_FOUND', message: `No file ${path}` }
    return { layers: [{ filename: path, format: 'raw', 'virtual-size': MIB, 'actual-size': 0 }] }
  })
})

describe('useImageChain', () => {
  it('reads the chain of the image on show, and again on demand', async () => {
    const path = ref<string | null>('/vm/golden.img')
    const { chain, error, loading, reload } = useImageChain(path)
    expect(loading.value).toBe(true)
    await settle()
    expect(chain.value?.map((layer) => layer.filename)).toEqual(['/vm/golden.img'])
    expect(main.calls.at(-1)).toEqual({
      key: 'imageGetInfo',
      request: { path: '/vm/golden.img', backingChain: true },
    })
    const asked = main.calls.length
    await reload()
    expect(main.calls.length).toBe(asked + 1)
    path.value = '/vm/gone.img'
    await settle()
    expect(chain.value).toBeNull()
    expect(error.value).toBe(
      'The chain of /vm/gone.img could not be read. No file /vm/gone.img. Check the path, or put the file back where it was.',
    )
    path.value = null
    await settle()
    expect(error.value).toBeNull()
    expect(loading.value).toBe(false)
  })
})
