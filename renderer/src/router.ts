import { createRouter, createWebHashHistory } from 'vue-router'
import { IMAGE_ROUTES } from './routes-images'
import { OPERATION_ROUTES } from './routes-operations'
import JobsView from './views/JobsView.vue'
import LibraryView from './views/LibraryView.vue'
import NotFoundView from './views/NotFoundView.vue'

declare module 'vue-router' {
  interface RouteMeta {
    /** Window title and menu label. */
    title?: string
    /** Show in the side menu. */
    nav?: boolean
    /** Position in the side menu (ascending). */
    navOrder?: number
  }
}

/**
 * The app's screens. Hash history: the same build works from the Electron app's own origin
 * and from the browser mode's server, with no server-side routes.
 */
export const router = createRouter({
  history: createWebHashHistory(),
  routes: [
    { path: '/', redirect: '/library' },
    {
      path: '/library',
      name: 'library',
      component: LibraryView,
      meta: { title: 'Library', nav: true, navOrder: 10 },
    },
    ...IMAGE_ROUTES,
    ...OPERATION_ROUTES,
    {
      path: '/jobs',
      name: 'jobs',
      component: JobsView,
      meta: { title: 'Jobs', nav: true, navOrder: 100 },
    },
    // Any other link: a screen that says so, not an empty page.
    {
      path: '/:unknown(.*)*',
      name: 'not-found',
      component: NotFoundView,
      meta: { title: 'No such screen' },
    },
  ],
})

router.afterEach((to) => {
  const title = typeof to.meta.title === 'string' ? to.meta.title : null
  document.title = title ? `${title} — AddCow Studio` : 'AddCow Studio'
})
