import { open, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Library } from '../../main/engine/library'
import { openImage } from '../../main/engine/open'
import { createOverlay, type CreateOverlayResult } from '../../main/engine/ops/create'

/** A large library for the scale benchmark and e2e tests (issue 15 item 1). */
export interface ScaleLibrary {
  bases: string[]
  overlays: string[]
}

const BASE_SIZE = 256 * 1024 * 1024
const CLUSTER = 64 * 1024

/**
 * Make `bases` raw bases (256 MiB, sparse, 1 MiB of data each) in `folder` and `perBase` add-cow
 * overlays on each (`vm-B-NNN.add-cow`, one cluster written at a place that varies), made by the
 * engine as `addcow create` makes them, and record all of them in the library at `dataDir` with
 * the trusted pairs and base fingerprints the CLI records, in one write of the library file.
 */
export async function buildScaleLibrary(
  folder: string,
  dataDir: string,
  bases: number,
  perBase: number,
): Promise<ScaleLibrary> {
  const made: ScaleLibrary = { bases: [], overlays: [] }
  const created: CreateOverlayResult[] = []
  for (let baseIndex = 0; baseIndex < bases; baseIndex++) {
    const base = join(folder, `base-${baseIndex}.raw`)
    await writeFile(base, Buffer.alloc(0))
    const handle = await open(base, 'r+')
    try {
      await handle.truncate(BASE_SIZE)
      await handle.write(Buffer.alloc(1024 * 1024, baseIndex + 1), 0, 1024 * 1024, 0)
    } finally {
      await handle.close()
    }
    made.bases.push(base)
    for (let index = 0; index < perBase; index++) {
      const overlay = join(folder, `vm-${baseIndex}-${String(index).padStart(3, '0')}.add-cow`)
      const result = await createOverlay({
        overlay,
        backing: `base-${baseIndex}.raw`,
        backingFormat: 'raw',
      })
      const disk = await openImage(overlay, { readOnly: false })
      try {
        await disk.write((index % 64) * CLUSTER, Buffer.alloc(CLUSTER, 0x5a))
      } finally {
        await disk.close()
      }
      created.push(result)
      made.overlays.push(result.overlay)
    }
  }
  await new Library(join(dataDir, 'library.json')).update((data) => {
    const at = new Date().toISOString()
    for (const result of created) {
      for (const pair of result.trust) data.trusted.push({ ...pair, reason: 'created', at })
      if (result.baseFingerprint) (data.fingerprints ??= []).push(result.baseFingerprint)
    }
    for (const path of [...made.bases, ...made.overlays]) data.images.push({ path, addedAt: at })
  })
  return made
}
