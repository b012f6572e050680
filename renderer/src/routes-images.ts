import type { RouteRecordRaw } from 'vue-router'

/**
 * Screens about images: chain browser, allocation map, create-overlay wizard.
 * `meta.nav` puts a route in the side menu, ordered by `meta.navOrder`.
 */
export const IMAGE_ROUTES: RouteRecordRaw[] = []
