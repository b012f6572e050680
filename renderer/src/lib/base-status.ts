import type { ImageSummary } from '../../../shared/ipc/contract'

/** Where an image's base stands (engine/ops/base-state.ts computes it). */
export type BaseStatus = ImageSummary['base']['status']

/** How a base state looks, everywhere it is shown (Library, Chains, Check, Launch). */
export interface BaseStatusLook {
  label: string
  type: 'default' | 'success' | 'warning' | 'error'
  /** One sentence that says what the state means. */
  sentence: string
}

/**
 * The looks of the base states: a matching base is green; a base never fingerprinted here is
 * amber "Unverified" (a change could not be seen), never green; a changed or missing base is red.
 */
export const BASE_STATUS_LOOK: Readonly<Record<BaseStatus, BaseStatusLook>> = {
  none: { label: 'Standalone', type: 'default', sentence: 'This image has no base.' },
  ok: {
    label: 'Base matches',
    type: 'success',
    sentence: 'The base matches the fingerprint recorded for this overlay.',
  },
  unverified: {
    label: 'Unverified',
    type: 'warning',
    sentence:
      'No fingerprint of the base was recorded here (the overlay was made elsewhere, or the library moved), so a change to the base could not be seen.',
  },
  changed: {
    label: 'Base changed',
    type: 'error',
    sentence:
      "The base changed since its fingerprint was recorded: the overlay's guest view may be corrupt.",
  },
  missing: {
    label: 'Base missing',
    type: 'error',
    sentence: 'The base file does not exist where the overlay names it.',
  },
  refused: {
    label: 'Untrusted base',
    type: 'warning',
    sentence: 'The name of the base is not followed (outside the folder and not trusted).',
  },
  'not-read': {
    label: 'Base not read',
    type: 'default',
    sentence: 'The overlay is flattened: it never reads its base.',
  },
}
