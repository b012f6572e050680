import { useDialog, type DialogOptions, type DialogReactive } from 'naive-ui'
import { nextTick } from 'vue'

/**
 * naive-ui's dialogs (useDialog) carry role="dialog" but no accessible name, so a screen reader
 * announces "dialog" alone and axe reports aria-dialog-name. Every dialog the app opens goes
 * through here: once it is in the page, it is labelled by its own title.
 */
export function useAppDialog() {
  const dialog = useDialog()
  const named =
    (open: (options: DialogOptions) => DialogReactive) =>
    (options: DialogOptions): DialogReactive => {
      const opened = open(options)
      void nextTick(nameOpenDialogs)
      return opened
    }
  return {
    create: named((options) => dialog.create(options)),
    warning: named((options) => dialog.warning(options)),
    error: named((options) => dialog.error(options)),
  }
}

let titles = 0

/** Point each unnamed dialog in the page at its title. */
function nameOpenDialogs(): void {
  for (const node of document.querySelectorAll<HTMLElement>(
    '.n-dialog[role="dialog"]:not([aria-labelledby])',
  )) {
    const title = node.querySelector<HTMLElement>('.n-dialog__title')
    if (!title) continue
    if (!title.id) title.id = `app-dialog-title-${++titles}`
    node.setAttribute('aria-labelledby', title.id)
  }
}
