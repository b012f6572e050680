import type { RouteRecordRaw } from 'vue-router'
import CheckView from './views/CheckView.vue'
import CommitView from './views/CommitView.vue'
import CompareView from './views/CompareView.vue'
import FlattenView from './views/FlattenView.vue'
import LaunchView from './views/LaunchView.vue'
import MachinesView from './views/MachinesView.vue'
import RebaseView from './views/RebaseView.vue'

/**
 * Screens for operations on an image: check, compare, commit, flatten, rebase, launch; and the
 * saved machines, which launch runs by name (`/launch?machine=NAME`).
 * `meta.nav` puts a route in the side menu, ordered by `meta.navOrder`.
 * Each takes the image it acts on as `?image=/abs/path` and offers a picker without it.
 */
export const OPERATION_ROUTES: RouteRecordRaw[] = [
  {
    path: '/check',
    name: 'check',
    component: CheckView,
    meta: { title: 'Check', nav: true, navOrder: 50 },
  },
  {
    path: '/compare',
    name: 'compare',
    component: CompareView,
    meta: { title: 'Compare', nav: true, navOrder: 51 },
  },
  {
    path: '/commit',
    name: 'commit',
    component: CommitView,
    meta: { title: 'Commit', nav: true, navOrder: 52 },
  },
  {
    path: '/flatten',
    name: 'flatten',
    component: FlattenView,
    meta: { title: 'Flatten', nav: true, navOrder: 54 },
  },
  {
    path: '/rebase',
    name: 'rebase',
    component: RebaseView,
    meta: { title: 'Rebase', nav: true, navOrder: 56 },
  },
  {
    path: '/launch',
    name: 'launch',
    component: LaunchView,
    meta: { title: 'Launch', nav: true, navOrder: 58 },
  },
  {
    path: '/machines',
    name: 'machines',
    component: MachinesView,
    meta: { title: 'Machines', nav: true, navOrder: 59 },
  },
]
