// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { createMemoryHistory, createRouter } from 'vue-router'
import { router as appRouter } from '../../../../renderer/src/router'
import NotFoundView from '../../../../renderer/src/views/NotFoundView.vue'
import { stubMatchMedia } from '../helpers/dom'
import { installFakeMain, settle } from '../helpers/fake-main'

// A link to a screen the app does not have (renderer/src/views/NotFoundView.vue): a screen that
// says so and leads back to the Library, not an empty page.

beforeAll(() => {
  stubMatchMedia()
  installFakeMain()
})

afterEach(() => {
  document.body.innerHTML = ''
})

describe('an unknown link', () => {
  it('resolves to the no-such-screen view in the app router; known screens do not', () => {
    expect(appRouter.resolve('/map?image=%2Fvm.add-cow').name).toBe('not-found')
    expect(appRouter.resolve('/no/such/screen').name).toBe('not-found')
    expect(appRouter.resolve('/library').name).toBe('library')
    expect(appRouter.resolve('/allocation').name).toBe('allocation')
  })

  it('says which link has no screen and opens the Library', async () => {
    const router = createRouter({
      history: createMemoryHistory(),
      routes: [
        { path: '/library', name: 'library', component: { render: () => null } },
        { path: '/:unknown(.*)*', name: 'not-found', component: NotFoundView },
      ],
    })
    await router.push('/map?image=%2Fvm.add-cow')
    const wrapper = mount(NotFoundView, { global: { plugins: [router] }, attachTo: document.body })
    await settle()
    expect(wrapper.get('h1').text()).toBe('No such screen')
    expect(wrapper.text()).toContain('AddCow Studio has no screen at /map?image=%2Fvm.add-cow.')
    await wrapper.get('button').trigger('click')
    await settle()
    expect(router.currentRoute.value.name).toBe('library')
  })
})
