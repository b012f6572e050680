// @vitest-environment happy-dom
import { mount } from '@vue/test-utils'
import { NButton, NDialogProvider, NMessageProvider } from 'naive-ui'
import { createPinia, setActivePinia } from 'pinia'
import { afterEach, beforeAll, describe, expect, it } from 'vitest'
import { defineComponent, h } from 'vue'
import { EVENTS } from '../../../../shared/ipc/channels'
import LaunchPowerControls from '../../../../renderer/src/components/LaunchPowerControls.vue'
import { useConfirmPower } from '../../../../renderer/src/composables/use-confirm-power'
import { stubMatchMedia } from '../helpers/dom'
import { installFakeMain, settle, type FakeMain } from '../helpers/fake-main'

// Reset and Force off lose what the guest had not written: they ask first, and nothing reaches
// QEMU until the user confirms.

let main: FakeMain

beforeAll(() => {
  stubMatchMedia()
  main = installFakeMain()
  main.handle('qemuPowerVm', () => ({ state: 'running' }))
})

afterEach(() => {
  document.body.innerHTML = ''
})

function dialog(title: string): HTMLElement | undefined {
  return [...document.querySelectorAll<HTMLElement>('[role="dialog"]')].find((node) =>
    node.textContent?.includes(title),
  )
}

function button(root: ParentNode, name: string): HTMLButtonElement {
  const found = [...root.querySelectorAll('button')].find(
    (node) => node.textContent?.trim() === name,
  )
  if (!found) throw new Error(`no button "${name}"`)
  return found
}

const powerCalls = (): unknown[] =>
  main.calls.filter((call) => call.key === 'qemuPowerVm').map((call) => call.request)

describe('LaunchPowerControls', () => {
  it('resets only after the dialog is confirmed, and not when it is cancelled', async () => {
    setActivePinia(createPinia())
    const Shell = defineComponent(
      () => () =>
        h(NMessageProvider, null, () =>
          h(NDialogProvider, null, () =>
            h(LaunchPowerControls, { sessionId: 'job-1', running: true }),
          ),
        ),
    )
    const wrapper = mount(Shell, { attachTo: document.body })
    main.emit(EVENTS.vmState, { sessionId: 'job-1', state: 'running', screen: false })
    await settle()
    const before = powerCalls().length

    button(document.body, 'Reset').click()
    await settle()
    const asked = dialog('Reset the guest?')
    expect(asked?.textContent).toContain('had not yet written to its disk is lost')
    // Named by its title, for screen readers (naive-ui's dialogs have no name of their own).
    const label = document.getElementById(asked?.getAttribute('aria-labelledby') ?? '')
    expect(label?.textContent?.trim()).toBe('Reset the guest?')
    button(asked!, 'Cancel').click()
    await settle()
    expect(powerCalls()).toHaveLength(before)

    button(document.body, 'Reset').click()
    await settle()
    button(dialog('Reset the guest?')!, 'Reset').click()
    await settle()
    expect(powerCalls().slice(before)).toEqual([{ jobId: 'job-1', action: 'reset' }])
    wrapper.unmount()
  })
})

describe('useConfirmPower', () => {
  it("asks before Force off and says a run without saving loses the whole run's writes", async () => {
    let pulled = 0
    const Caller = defineComponent(() => {
      const { confirmForceOff } = useConfirmPower()
      return () =>
        h(NButton, { onClick: () => confirmForceOff(true, () => pulled++) }, () => 'Pull')
    })
    const wrapper = mount(
      defineComponent(() => () => h(NDialogProvider, null, () => h(Caller))),
      { attachTo: document.body },
    )
    button(document.body, 'Pull').click()
    await settle()
    const asked = dialog('Force the guest off?')
    expect(asked?.textContent).toContain('as if the power cord were pulled')
    expect(asked?.textContent).toContain(
      'everything the guest wrote since it started is thrown away',
    )
    expect(pulled).toBe(0)
    button(asked!, 'Force off').click()
    await settle()
    expect(pulled).toBe(1)
    wrapper.unmount()
  })
})
