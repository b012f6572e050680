/**
 * Legends as data: what each key of a drawing looks like and what it means, so a drawing and
 * its legend are made from one table and cannot drift apart.
 */

/** How a legend draws one key: a line (dashed or not), an outlined box, or a filled square. */
export type LegendSwatch =
  | { shape: 'line'; color: string; dash?: string }
  | { shape: 'box'; color: string; dash?: string }
  | { shape: 'fill'; color: string; size?: 'small' | 'medium' }

/** One key of a legend. */
export interface LegendItem {
  key: string
  label: string
  swatch: LegendSwatch
}
