import { ref, watch, type Ref } from 'vue'

/** Where the side menu's state is kept between sessions. */
export const SIDEBAR_STORAGE_KEY = 'addcow.sidebar.collapsed'
/** Below this window width the side menu starts collapsed unless the user chose otherwise. */
export const SIDEBAR_AUTO_COLLAPSE_WIDTH = 1100

/**
 * Whether the side menu is collapsed: the user's last choice (remembered in localStorage), or,
 * before any choice, collapsed on windows narrower than {@link SIDEBAR_AUTO_COLLAPSE_WIDTH}.
 */
export function useSidebar(): { collapsed: Ref<boolean>; toggle: () => void } {
  const stored = readStored()
  const collapsed = ref(stored ?? window.innerWidth < SIDEBAR_AUTO_COLLAPSE_WIDTH)
  function toggle(): void {
    collapsed.value = !collapsed.value
  }
  watch(collapsed, (value) => {
    try {
      window.localStorage.setItem(SIDEBAR_STORAGE_KEY, value ? '1' : '0')
    } catch {
      // Storage refused (private mode, quota): the choice holds for this session only.
    }
  })
  return { collapsed, toggle }
}

function readStored(): boolean | null {
  try {
    const value = window.localStorage.getItem(SIDEBAR_STORAGE_KEY)
    return value === '1' ? true : value === '0' ? false : null
  } catch {
    return null
  }
}
