import type { RouteRecordRaw } from 'vue-router'

/**
 * Screens about images: chain browser, allocation map (the create-overlay wizard is a dialog
 * any screen opens). A route taking an image takes its path as `?image=/abs/path`.
 * `meta.nav` puts a route in the side menu, ordered by `meta.navOrder`.
 */
export const IMAGE_ROUTES: RouteRecordRaw[] = [
  {
    path: '/chain',
    name: 'chain',
    component: () => import('./views/ChainView.vue'),
    meta: { title: 'Chains', nav: true, navOrder: 20 },
  },
  {
    path: '/allocation',
    name: 'allocation',
    component: () => import('./views/AllocationMapView.vue'),
    meta: { title: 'Allocation map', nav: true, navOrder: 30 },
  },
]
