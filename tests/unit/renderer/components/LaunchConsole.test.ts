// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { NMessageProvider } from 'naive-ui'
import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { defineComponent, h } from 'vue'
import { EVENTS } from '../../../../shared/ipc/channels'
import LaunchConsole from '../../../../renderer/src/components/LaunchConsole.vue'
import { useVmConsoleStore } from '../../../../renderer/src/stores/vm-console'
import { stubMatchMedia } from '../helpers/dom'
import { installFakeMain, settle, type FakeMain } from '../helpers/fake-main'

// A page opened on a VM that runs already (a reload): the console shows what main kept of the
// boot, then what comes next; a page that saw the VM start keeps its own text.

let main: FakeMain

beforeAll(() => {
  stubMatchMedia()
  main = installFakeMain()
  main.handle('qemuGetConsole', () => ({
    chunks: [
      { stream: 'stderr', text: 'qemu: warning\n' },
      { stream: 'serial', text: 'addcow boot test: sector 2048 written\n' },
    ],
    state: 'paused',
  }))
})

afterEach(() => {
  document.body.innerHTML = ''
})

function open(sessionId: string) {
  const Shell = defineComponent(
    () => () => h(NMessageProvider, null, () => h(LaunchConsole, { sessionId, running: true })),
  )
  return mount(Shell, { attachTo: document.body })
}

const asked = (): number => main.calls.filter((call) => call.key === 'qemuGetConsole').length

describe('LaunchConsole', () => {
  it('shows the text main kept for a VM it did not see start, then what comes next', async () => {
    setActivePinia(createPinia())
    const before = asked()
    const wrapper = open('job-7')
    await settle()
    expect(asked()).toBe(before + 1)
    expect(wrapper.text()).toContain('addcow boot test: sector 2048 written')
    expect(wrapper.text()).toContain('qemu: warning')
    expect(useVmConsoleStore().state('job-7')).toBe('paused')
    main.emit(EVENTS.consoleOutput, { sessionId: 'job-7', stream: 'serial', text: 'login: ' })
    await settle()
    expect(wrapper.text()).toContain('sector 2048 written\nlogin: ')
  })

  it('keeps the text of a VM it saw start, without asking main', async () => {
    setActivePinia(createPinia())
    const store = useVmConsoleStore()
    main.emit(EVENTS.consoleOutput, { sessionId: 'job-8', stream: 'serial', text: 'SeaBIOS' })
    const before = asked()
    const wrapper = open('job-8')
    await settle()
    expect(asked()).toBe(before)
    expect(wrapper.text()).toContain('SeaBIOS')
    expect(store.output('job-8')).toEqual([{ stream: 'serial', text: 'SeaBIOS' }])
  })
})
