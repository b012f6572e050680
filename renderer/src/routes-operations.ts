import type { RouteRecordRaw } from 'vue-router'

/**
 * Screens for operations on an image: check, commit, flatten, rebase, launch.
 * `meta.nav` puts a route in the side menu, ordered by `meta.navOrder`.
 */
export const OPERATION_ROUTES: RouteRecordRaw[] = []
