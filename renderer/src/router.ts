import { createRouter, createWebHashHistory } from 'vue-router'
import JobsView from './views/JobsView.vue'
import LibraryView from './views/LibraryView.vue'

/**
 * The app's screens. Hash history: the same build works from the Electron app's own origin
 * and from the browser mode's server, with no server-side routes.
 */
export const router = createRouter({
  history: createWebHashHistory(),
  routes: [
    { path: '/', redirect: '/library' },
    { path: '/library', name: 'library', component: LibraryView, meta: { title: 'Library' } },
    { path: '/jobs', name: 'jobs', component: JobsView, meta: { title: 'Jobs' } },
  ],
})

router.afterEach((to) => {
  const title = typeof to.meta.title === 'string' ? to.meta.title : null
  document.title = title ? `${title} — AddCow Studio` : 'AddCow Studio'
})
