/**
 * Accessibility gaps in naive-ui's own markup, mended in the DOM until naive-ui fixes them
 * (each would otherwise be a critical axe violation on every screen that uses the component):
 *
 * - the card puts `role="heading"` on its header and again on the header's inner box, without
 *   `aria-level`: every card header gets level 2 (cards sit under the screen's h1), and the
 *   inner box stops being a heading of its own;
 * - the number field's − and + buttons have no name: they get "Decrease" and "Increase" (in
 *   DOM order; the field's arrow keys do the same from the keyboard).
 */
export function repairAriaGaps(root: Document): MutationObserver {
  const repair = (): void => {
    for (const header of root.querySelectorAll<HTMLElement>(
      '.n-card-header[role="heading"]:not([aria-level])',
    )) {
      header.setAttribute('aria-level', '2')
    }
    for (const inner of root.querySelectorAll<HTMLElement>(
      '.n-card-header__main[role="heading"]',
    )) {
      inner.setAttribute('role', 'none')
    }
    for (const field of root.querySelectorAll<HTMLElement>('.n-input-number')) {
      const buttons = field.querySelectorAll<HTMLElement>('button:not([aria-label])')
      if (buttons.length !== 2) continue
      buttons[0]!.setAttribute('aria-label', 'Decrease')
      buttons[1]!.setAttribute('aria-label', 'Increase')
    }
  }
  repair()
  const observer = new MutationObserver(repair)
  observer.observe(root.body, { childList: true, subtree: true })
  return observer
}
