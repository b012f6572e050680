import type { ImageInfo } from '../../../shared/image-types'
import { formatBytes, formatBytesExact, formatCount } from '../composables/use-format'
import { plainWords } from './errors'

/** One line of the Properties panel: a label, a value, and the exact value for a tooltip. */
export interface PropertyRow {
  label: string
  value: string
  exact?: string
}

const NAME_REASONS: Record<string, string> = {
  'inside-folder': 'in the folder of the file that names it',
  'trusted-in-library': 'trusted in the library',
  'allowed-by-user': 'allowed for this run',
  'outside-folder': 'outside the folder, and not trusted',
  protocol: 'a protocol name, never followed',
  json: 'a json: name, never followed',
  device: 'a device, never followed',
  'not-regular-file': 'not a regular file, never followed',
  missing: 'the file is missing',
  loop: 'it loops back, never followed',
}

function bytesRow(label: string, bytes: number | undefined): PropertyRow[] {
  return bytes === undefined
    ? []
    : [{ label, value: formatBytes(bytes), exact: formatBytesExact(bytes) }]
}

/**
 * What `addcow info` says of one layer, as the Properties panel lists it: each file's size on
 * disk apart (info's "disk size" adds them; here each is named), the clusters with grouping,
 * and every stored name with what resolving it gave.
 */
export function propertyRows(layer: ImageInfo): PropertyRow[] {
  const rows: PropertyRow[] = [
    { label: 'Format', value: layer.format },
    ...bytesRow('Disk size (guest view)', layer['virtual-size']),
  ]
  if (layer['data-file'] !== undefined) {
    rows.push(...bytesRow('add-cow file on disk', layer['actual-size']))
    rows.push(...bytesRow('Image file on disk', layer['data-file-actual-size']))
    if (layer['data-file-actual-size'] !== undefined)
      rows.push(
        ...bytesRow('Both files on disk', layer['actual-size'] + layer['data-file-actual-size']),
      )
  } else {
    rows.push(...bytesRow('On disk', layer['actual-size']))
  }
  rows.push(...bytesRow('Cluster size', layer['cluster-size']))
  if (layer['total-clusters'] !== undefined) {
    rows.push({
      label: 'Clusters written here',
      value: `${formatCount(layer['allocated-clusters'] ?? 0)} of ${formatCount(layer['total-clusters'])}`,
    })
  }
  if (layer['all-allocated'] !== undefined)
    rows.push({
      label: 'Stands alone (flattened)',
      value: layer['all-allocated'] ? 'yes: the base is no longer read' : 'no',
    })
  if (layer['backing-filename'] !== undefined)
    rows.push({
      label: 'Base as stored',
      value: `${layer['backing-filename']}${layer['backing-filename-format'] ? ` (${layer['backing-filename-format']})` : ''}`,
    })
  if (layer['data-file'] !== undefined)
    rows.push({ label: 'Image file as stored', value: layer['data-file'] })
  for (const name of layer.names ?? []) {
    rows.push({
      label: name.followed ? 'Name followed' : 'Name not followed',
      value: `${name.stored} → ${name.resolved} (${NAME_REASONS[name.reason] ?? name.reason})`,
    })
  }
  for (const warning of layer.warnings ?? [])
    rows.push({ label: 'Note', value: plainWords(warning) })
  return rows
}
