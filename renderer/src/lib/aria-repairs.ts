/**
 * naive-ui's card puts `role="heading"` on its header and again on the header's inner box,
 * without `aria-level`: a screen reader hears two headings of no level, and axe reports a
 * critical violation. Until naive-ui fixes it, every card header in the document gets level 2
 * (cards sit under the screen's h1), and the inner box stops being a heading of its own.
 */
export function repairCardHeadings(root: Document): MutationObserver {
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
  }
  repair()
  const observer = new MutationObserver(repair)
  observer.observe(root.body, { childList: true, subtree: true })
  return observer
}
