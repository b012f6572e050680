import type { ImageInfo } from '../../../shared/image-types'
import { chainOf, openImage, type OpenImageOptions } from '../open'

/**
 * `info`: describe an image and, with `backingChain`, every layer below it.
 *
 * Opens leniently: a name the policy refuses, or a missing file, is shown with its verdict and
 * never followed, so info is safe on any downloaded image.
 */
export async function imageInfo(
  path: string,
  options: OpenImageOptions & { backingChain?: boolean } = {},
): Promise<ImageInfo[]> {
  const disk = await openImage(path, { ...options, readOnly: true, lenient: true })
  try {
    const layers = options.backingChain ? chainOf(disk) : [disk]
    const infos: ImageInfo[] = []
    for (const layer of layers) infos.push(await layer.info())
    return infos
  } finally {
    await disk.close()
  }
}
