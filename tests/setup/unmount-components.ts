import { afterEach } from 'vitest'

/**
 * Setup file of the unit project: in a DOM test file (`@vitest-environment happy-dom`), every
 * component a test mounted with @vue/test-utils is unmounted after that test.
 *
 * Clearing document.body removes a component's elements but leaves the component alive: its
 * watchers and its listeners on the fake main kept running in every later test of the file
 * (a job event re-rendered every wizard mounted before), and unmount hooks never ran.
 * @vue/test-utils' enableAutoUnmount may be called once per module graph, and without
 * isolation one graph serves many files: it is called once, and every file registers the
 * unmount it hands back.
 */
const KEY = Symbol.for('addcow.test.unmountMounted')
const registry = globalThis as { [KEY]?: () => void }

if (typeof document !== 'undefined') {
  if (!registry[KEY]) {
    const { enableAutoUnmount } = await import('@vue/test-utils')
    enableAutoUnmount((unmountAll) => {
      registry[KEY] = unmountAll
    })
  }
  afterEach(() => registry[KEY]?.())
}
