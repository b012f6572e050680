import type { ImageSummary, ResponseOf } from '../../../shared/ipc/contract'

type Listing = ResponseOf<'library:list-images'>

/**
 * The library after `listing`, given the rows held (the listing named by `listing.since`): the
 * whole library when main sent it all, else the held rows with the changed ones replaced, in
 * the order main sent when it changed. Rows that did not change keep their objects, and an
 * answer without changes returns `held` itself, so nothing downstream is computed again.
 */
export function applyListing(held: ImageSummary[], listing: Listing): ImageSummary[] {
  if (listing.since === null) return listing.images
  if (listing.images.length === 0 && listing.order === null) return held
  const changed = new Map(listing.images.map((image) => [image.path, image]))
  if (listing.order === null) return held.map((image) => changed.get(image.path) ?? image)
  const heldByPath = new Map(held.map((image) => [image.path, image]))
  return listing.order.flatMap((path) => {
    const image = changed.get(path) ?? heldByPath.get(path)
    return image ? [image] : []
  })
}
