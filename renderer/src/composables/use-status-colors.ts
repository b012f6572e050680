import { useOsTheme } from 'naive-ui'
import { computed, type ComputedRef } from 'vue'

/** Text colours for states, readable (WCAG AA on the page background) in both themes. */
export interface StatusColors {
  dark: boolean
  error: string
  warning: string
  success: string
  /** Lines and outlines of drawings (the chain graph). */
  line: string
  /** Background of drawn nodes, and their selected state. */
  surface: string
  selected: string
}

/**
 * The colours of errors, warnings and drawings for the system's theme (the app follows it, see
 * App.vue), for text and SVG that naive-ui's components do not draw.
 */
export function useStatusColors(): ComputedRef<StatusColors> {
  const osTheme = useOsTheme()
  return computed(() =>
    osTheme.value === 'dark'
      ? {
          dark: true,
          error: '#f28b8b',
          warning: '#f2c97d',
          success: '#7dd3a8',
          line: '#7d8590',
          surface: '#24272e',
          selected: '#1f3b2e',
        }
      : {
          dark: false,
          error: '#c0262d',
          warning: '#8a5300',
          success: '#1f6f4a',
          line: '#8c959f',
          surface: '#ffffff',
          selected: '#e3f2ea',
        },
  )
}
