import type { ImageInfo } from '../../../shared/image-types'
import { chainOf, openImage, probeNote, type OpenImageOptions } from '../open'

/**
 * `info`: describe an image and, with `backingChain`, every layer below it.
 *
 * Opens leniently: a name the policy refuses, or a missing file, is shown with its verdict and
 * never followed, so info is safe on any downloaded image. A file whose name says one format
 * but which has no header of it (a `.add-cow` file read as raw) gets a warning saying so.
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
    // A file named like an image of some format but without its header is read as raw: say so.
    const note = options.format === undefined ? await probeNote(path) : null
    if (note?.namedLike && infos[0]) {
      infos[0] = { ...infos[0], warnings: [note.message, ...(infos[0].warnings ?? [])] }
    }
    return infos
  } finally {
    await disk.close()
  }
}
