/**
 * Accessibility gaps in naive-ui's own markup, mended in the DOM until naive-ui fixes them
 * (each would otherwise be a critical axe violation on every screen that uses the component):
 *
 * - the card puts `role="heading"` on its header and again on the header's inner box, without
 *   `aria-level`: every card header gets level 2 (cards sit under the screen's h1), and the
 *   inner box stops being a heading of its own;
 * - the number field's − and + buttons have no name: they get "Decrease" and "Increase" (in
 *   DOM order; the field's arrow keys do the same from the keyboard);
 * - a select that is not filterable takes the focus on a box with no role and no name (the
 *   `aria-label` given to the select lands on its outer box): the focusable label box becomes
 *   a combobox with that name, expanded while its menu is open;
 * - a disabled checkbox only drops out of the tab order: it gets `aria-disabled="true"` (and
 *   loses it when enabled again), so a screen reader says it cannot be changed.
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
    for (const select of root.querySelectorAll<HTMLElement>(
      '.n-select[aria-label], .n-select[data-label]',
    )) {
      const selection = select.querySelector<HTMLElement>(':scope > .n-base-selection')
      const box = selection?.querySelector<HTMLElement>('.n-base-selection-label[tabindex]')
      if (!selection || !box) continue
      const label = select.getAttribute('aria-label') ?? select.dataset.label ?? ''
      select.removeAttribute('aria-label')
      select.dataset.label = label
      box.setAttribute('role', 'combobox')
      box.setAttribute('aria-label', label)
      box.setAttribute('aria-haspopup', 'listbox')
      const open = selection.classList.contains('n-base-selection--active') ? 'true' : 'false'
      if (box.getAttribute('aria-expanded') !== open) box.setAttribute('aria-expanded', open)
    }
    for (const box of root.querySelectorAll<HTMLElement>('.n-checkbox[role="checkbox"]')) {
      const disabled = box.classList.contains('n-checkbox--disabled')
      if (disabled && box.getAttribute('aria-disabled') !== 'true')
        box.setAttribute('aria-disabled', 'true')
      else if (!disabled && box.hasAttribute('aria-disabled')) box.removeAttribute('aria-disabled')
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
  // Classes too: a select's box says it is open by a class.
  observer.observe(root.body, {
    childList: true,
    subtree: true,
    attributes: true,
    attributeFilter: ['class'],
  })
  return observer
}
