import { ref, type Ref } from 'vue'

/** How long typed letters add up to one search (type-ahead), in milliseconds. */
export const TYPE_AHEAD_MS = 700

/**
 * The keyboard of a listbox with one Tab stop (roving tabindex): arrows, Home, End, Page Up
 * and Page Down move the active option; letters jump to the next option whose label starts
 * with what was typed (type-ahead). The caller renders `tabindex` from `active`, focuses the
 * option `focus(index)` names, and says what Enter and Space do.
 */
export function useListboxKeys(options: {
  count: () => number
  label: (index: number) => string
  focus: (index: number) => void
  /** The active option moved (by key or type-ahead). */
  onMove?: (index: number) => void
  onEnter?: (index: number) => void
  onSpace?: (index: number) => void
  /** Backspace: go up (a folder, in the file browser). */
  onBack?: () => void
  /** Options a page holds (Page Up / Page Down); default 10. */
  page?: number
}): {
  active: Ref<number>
  onKeydown: (event: KeyboardEvent) => void
  moveTo: (index: number) => void
} {
  const active = ref(0)
  let typed = ''
  let typedAt = 0

  function moveTo(index: number): void {
    const count = options.count()
    if (count === 0) return
    const next = Math.max(0, Math.min(count - 1, index))
    active.value = next
    options.focus(next)
    options.onMove?.(next)
  }

  function typeAhead(letter: string, now: number): boolean {
    const count = options.count()
    if (count === 0) return false
    typed = now - typedAt > TYPE_AHEAD_MS ? letter : typed + letter
    typedAt = now
    const wanted = typed.toLocaleLowerCase()
    // A repeated single letter cycles through the options that start with it.
    const cycling = typed.length > 1 && [...typed].every((char) => char === typed[0])
    const prefix = cycling ? wanted[0]! : wanted
    const start = cycling || typed.length === 1 ? active.value + 1 : active.value
    for (let step = 0; step < count; step++) {
      const index = (start + step) % count
      if (options.label(index).toLocaleLowerCase().startsWith(prefix)) {
        moveTo(index)
        return true
      }
    }
    return false
  }

  function onKeydown(event: KeyboardEvent): void {
    const page = options.page ?? 10
    // A key that types nothing (an arrow, Home, Enter…) ends the search.
    if (event.key.length !== 1) typed = ''
    const handled = ((): boolean => {
      switch (event.key) {
        case 'ArrowDown':
          moveTo(active.value + 1)
          return true
        case 'ArrowUp':
          moveTo(active.value - 1)
          return true
        case 'Home':
          moveTo(0)
          return true
        case 'End':
          moveTo(options.count() - 1)
          return true
        case 'PageDown':
          moveTo(active.value + page)
          return true
        case 'PageUp':
          moveTo(active.value - page)
          return true
        case 'Enter':
          options.onEnter?.(active.value)
          return options.onEnter !== undefined
        case ' ':
          if (typed !== '' && Date.now() - typedAt <= TYPE_AHEAD_MS)
            return typeAhead(' ', Date.now())
          options.onSpace?.(active.value)
          return options.onSpace !== undefined
        case 'Backspace':
          options.onBack?.()
          return options.onBack !== undefined
        default:
          if (event.key.length === 1 && !event.ctrlKey && !event.metaKey && !event.altKey)
            return typeAhead(event.key, Date.now())
          return false
      }
    })()
    if (handled) event.preventDefault()
  }

  return { active, onKeydown, moveTo }
}
