/**
 * The words of a search box, folded (accents and case ignored): what the Library's search and
 * the Chains view's search both match, word by word, in a folded haystack.
 */
export function searchWords(query: string): string[] {
  return foldForSearch(query)
    .split(/\s+/)
    .filter((word) => word !== '')
}

/** `text` with accents removed and in lower case, for {@link searchWords} to match. */
export function foldForSearch(text: string): string {
  return text.normalize('NFD').replace(/\p{M}/gu, '').toLocaleLowerCase()
}
