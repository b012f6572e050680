import type { ImageSummary } from '../../../shared/ipc/contract'
import { foldForSearch, searchWords } from './search'

/** Which images the library shows. */
export type LibraryFilter = 'all' | 'overlays' | 'bases' | 'problems'

/** The filter's choices, as the library's toolbar offers them. */
export const LIBRARY_FILTERS: { value: LibraryFilter; label: string }[] = [
  { value: 'all', label: 'All images' },
  { value: 'overlays', label: 'Overlays' },
  { value: 'bases', label: 'Bases (used by an overlay)' },
  { value: 'problems', label: 'Needing attention' },
]

/** Whether an image needs the user: unreadable, or its base missing, refused or changed. */
export function needsAttention(image: ImageSummary): boolean {
  return (
    image.error !== null ||
    image.base.status === 'missing' ||
    image.base.status === 'refused' ||
    image.base.status === 'changed'
  )
}

function matchesFilter(image: ImageSummary, filter: LibraryFilter): boolean {
  switch (filter) {
    case 'overlays':
      return image.base.status !== 'none' || image.allocatedPercent !== null
    case 'bases':
      return image.dependents.length > 0
    case 'problems':
      return needsAttention(image)
    default:
      return true
  }
}

/**
 * The images to show: those whose name or path contains every word of `search` (case and
 * accents ignored) and that pass `filter`, in the library's order.
 */
export function filterImages(
  images: readonly ImageSummary[],
  search: string,
  filter: LibraryFilter,
): ImageSummary[] {
  const words = searchWords(search)
  return images.filter((image) => {
    if (!matchesFilter(image, filter)) return false
    const haystack = foldForSearch(`${image.name} ${image.path} ${image.format ?? ''}`)
    return words.every((word) => haystack.includes(word))
  })
}

const NAME_ORDER = new Intl.Collator(undefined, { numeric: true, sensitivity: 'base' })

/** Sort by name as people expect (`disk2` before `disk10`, case ignored). */
export function compareNames(a: ImageSummary, b: ImageSummary): number {
  return NAME_ORDER.compare(a.name, b.name)
}

/** How the library's rows are sorted: a column key and a direction. */
export interface LibrarySort {
  key: string
  order: 'ascend' | 'descend'
}

/** The sorts the toolbar offers (the same as clicking the column headers), as select options. */
export const LIBRARY_SORTS: { value: string; label: string }[] = [
  { value: '', label: 'Library order' },
  { value: 'name:ascend', label: 'Name, A to Z' },
  { value: 'name:descend', label: 'Name, Z to A' },
  { value: 'virtualSize:descend', label: 'Size, largest first' },
  { value: 'virtualSize:ascend', label: 'Size, smallest first' },
  { value: 'allocatedPercent:descend', label: 'Written here, most first' },
  { value: 'dependents:descend', label: 'Overlays, most first' },
]

/** A toolbar sort value (`name:ascend`) as a sort, or null for the library's order. */
export function parseSort(value: string): LibrarySort | null {
  const [key, order] = value.split(':')
  return key && (order === 'ascend' || order === 'descend') ? { key, order } : null
}

/** A sort as a toolbar value. */
export function sortValue(sort: LibrarySort | null): string {
  return sort ? `${sort.key}:${sort.order}` : ''
}

/** Compare two nullable numbers, unknown values last. */
export function compareNumbers(a: number | null, b: number | null): number {
  if (a === b) return 0
  if (a === null) return 1
  if (b === null) return -1
  return a - b
}
