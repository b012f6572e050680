import { randomBytes } from 'node:crypto'
import type { ImageSummary, ResponseOf } from '../../shared/ipc/contract'

/** Listings remembered, so that several windows (each a step behind) can each get a diff. */
const VERSIONS_KEPT = 8

type Listing = ResponseOf<'library:list-images'>

/** One listing as sent: each row as its JSON text (what a diff compares), and the order. */
interface Remembered {
  rows: Map<string, string>
  /** The paths in order, joined: a diff sends the order only when this changed. */
  orderKey: string
}

/**
 * Versions of the library listing, so that a Refresh answers with what changed: main names each
 * listing it sends, and a list that says which one it holds (`since`) gets only the rows whose
 * summary differs from that one (and the order of paths, when images came, went or moved).
 * A listing identical to the last one keeps its name, so an unchanged library answers with no
 * rows at all. A `since` main does not remember (it restarted, or the client is far behind)
 * gets the whole library.
 */
export class ListingVersions {
  private readonly versions = new Map<string, Remembered>()
  private latest: string | null = null
  /** Distinguishes this run's version names from those of a main that ran before. */
  private readonly run = randomBytes(6).toString('hex')
  private counter = 0

  /** The listing of `images` to send to a client that holds version `since` (or none). */
  answer(images: ImageSummary[], warning: string | null, since: string | undefined): Listing {
    const rows = new Map(images.map((image) => [image.path, JSON.stringify(image)]))
    const orderKey = images.map((image) => image.path).join('\0')
    const version = this.remember(rows, orderKey)
    const held = since === undefined ? undefined : this.versions.get(since)
    if (!held) return { images, warning, version, since: null, order: null }
    return {
      images: images.filter((image) => held.rows.get(image.path) !== rows.get(image.path)),
      warning,
      version,
      since: since ?? null,
      order: held.orderKey === orderKey ? null : images.map((image) => image.path),
    }
  }

  /** The name of this listing: the last one's when nothing changed, else a new one. */
  private remember(rows: Map<string, string>, orderKey: string): string {
    const last = this.latest === null ? undefined : this.versions.get(this.latest)
    if (this.latest !== null && last && sameListing(last, rows, orderKey)) return this.latest
    const version = `${this.run}-${++this.counter}`
    this.versions.set(version, { rows, orderKey })
    this.latest = version
    // A Map iterates in insertion order: the first key is the oldest version.
    while (this.versions.size > VERSIONS_KEPT) {
      this.versions.delete(this.versions.keys().next().value!)
    }
    return version
  }
}

function sameListing(last: Remembered, rows: Map<string, string>, orderKey: string): boolean {
  if (last.orderKey !== orderKey) return false
  for (const [path, text] of rows) if (last.rows.get(path) !== text) return false
  return true
}
