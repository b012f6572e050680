import type { ImageInfo } from '../../../shared/image-types'
import { realPath } from '../fs'
import { STRICT_POLICY } from '../names'
import { chainOf, openImage, probeNote, type OpenImageOptions } from '../open'
import { findFormat } from '../registry'

/**
 * `info`: describe an image and, with `backingChain`, every layer below it.
 *
 * Opens leniently: a name the policy refuses, or a missing file, is shown with its verdict and
 * never followed, so info is safe on any downloaded image. A file whose name says one format
 * but which has no header of it (a `.add-cow` file read as raw) gets a warning saying so. A loop
 * in the stored names (also one through a flattened layer, which the open never follows) is
 * shown, never followed: a warning on the top layer names the cycle, and the name that closes it
 * has the verdict `loop`.
 */
export async function imageInfo(
  path: string,
  options: OpenImageOptions & { backingChain?: boolean } = {},
): Promise<ImageInfo[]> {
  const disk = await openImage(path, { ...options, readOnly: true, lenient: true })
  let infos: ImageInfo[]
  let stopsShort: boolean
  try {
    const chain = chainOf(disk)
    const layers = options.backingChain ? chain : [disk]
    infos = []
    for (const layer of layers) infos.push(await layer.info())
    // A file named like an image of some format but without its header is read as raw: say so
    // (only a probe that found no format gives the fallback, so only then is the head read again).
    const probedAsFallback =
      options.format === undefined && findFormat(disk.format)?.fallback === true
    const note = probedAsFallback ? await probeNote(path) : null
    if (note?.namedLike && infos[0]) {
      infos[0] = { ...infos[0], warnings: [note.message, ...(infos[0].warnings ?? [])] }
    }
    // A loop can hide only where the open stopped at a layer that names a base it did not open
    // (flattened, or a name refused); a chain that ends in a layer naming nothing has none.
    const lowest = chain[chain.length - 1]!
    stopsShort = lowest.backing === null && (lowest.backingLink?.() ?? null) !== null
  } finally {
    await disk.close()
  }
  if (stopsShort) await markLoop(infos, options)
  return infos
}

/** Add the loop below the top layer, if any, to what info shows. */
async function markLoop(infos: ImageInfo[], options: OpenImageOptions): Promise<void> {
  const top = infos[0]
  if (!top || top['backing-filename'] === undefined) return
  const real = await realPath(top.filename)
  // Loaded only here: most chains end in a layer naming nothing, and info's start-up counts.
  const { buildGraph, loopBelow } = await import('../graph')
  const graph = await buildGraph({
    library: null,
    extra: [real],
    chainsOnly: true,
    namesOnly: true,
    policy: options.policy ?? STRICT_POLICY,
  })
  const loop = loopBelow(graph, real)
  if (!loop) return
  const cycle = [...loop, loop[0]!].join(' → ')
  top.warnings = [
    ...(top.warnings ?? []),
    `the backing chain loops: ${cycle}; it is not followed around the loop`,
  ]
  const shown = await Promise.all(infos.map((info) => realPath(info.filename)))
  for (const [index, info] of infos.entries()) {
    const target = info['full-backing-filename']
    if (target === undefined) continue
    const targetReal = await realPath(target)
    if (!shown.slice(0, index + 1).includes(targetReal)) continue
    info.names = (info.names ?? []).map((name) =>
      name.stored === info['backing-filename']
        ? { ...name, followed: false, reason: 'loop' }
        : name,
    )
  }
}
