import type { ImageInfo, NameResolution, NameVerdictReason } from '../../../shared/image-types'

/**
 * How the chain of one image reads, top to base: each layer's role, and each name it stores
 * with what it is (base or image file), where it resolves and whether it is followed, and why.
 */

/** Why a name is or is not followed, in words. */
export const REASON_WORDS: Record<NameVerdictReason, string> = {
  'inside-folder': 'it stays inside the folder of the file that names it',
  'trusted-in-library': 'the library trusts this pair of files',
  'allowed-by-user': 'allowed for this run',
  'outside-folder': 'it leaves the folder and the library does not trust it',
  protocol: 'it is a protocol name, never followed',
  json: 'it is a json: name, never followed',
  device: 'it names a device, never followed',
  'not-regular-file': 'it is not a regular file',
  missing: 'the file does not exist',
  loop: 'it leads back into the chain',
  self: 'it is the file that names it',
  'same-file': 'it is the same file as another layer of the chain',
}

/** One stored name of a layer, explained. */
export interface LayerName {
  /** What the name points at. */
  role: 'Base' | 'Image file' | 'Name'
  stored: string
  resolved: string
  format: string | null
  followed: boolean
  reason: string
}

/** The names a layer stores, base first. */
export function layerNames(layer: ImageInfo): LayerName[] {
  const names: NameResolution[] = layer.names ? [...layer.names] : []
  // A layer may store a name its info lists without a verdict (older formats): show it too.
  const backing = layer['backing-filename']
  if (backing !== undefined && !names.some((name) => name.stored === backing)) {
    names.push({
      stored: backing,
      resolved: layer['full-backing-filename'] ?? backing,
      format: layer['backing-filename-format'] ?? null,
      followed: false,
      reason: 'missing',
    })
  }
  const roleOf = (name: NameResolution): LayerName['role'] =>
    name.stored === backing ? 'Base' : name.stored === layer['data-file'] ? 'Image file' : 'Name'
  const rank = { Base: 0, 'Image file': 1, Name: 2 } as const
  return names
    .map((name) => ({
      role: roleOf(name),
      stored: name.stored,
      resolved: name.resolved,
      format: name.format,
      followed: name.followed,
      reason: REASON_WORDS[name.reason],
    }))
    .sort((a, b) => rank[a.role] - rank[b.role])
}

/** A layer's place in the chain: "Top", "Layer n", "Base". */
export function layerRole(index: number, count: number): string {
  if (count === 1) return 'Standalone'
  if (index === 0) return 'Top'
  if (index === count - 1) return 'Base'
  return `Layer ${index}`
}

/** Why the chain stops at its last layer although that layer names a base, or null. */
export function chainStop(layers: readonly ImageInfo[]): string | null {
  const last = layers[layers.length - 1]
  if (!last || last['backing-filename'] === undefined) return null
  const base = layerNames(last).find((name) => name.role === 'Base')
  if (!base || base.followed) return null
  return `The chain stops here: the base name “${base.stored}” is not followed because ${base.reason}.`
}
