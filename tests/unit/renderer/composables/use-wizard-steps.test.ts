import { describe, expect, it } from 'vitest'
import { ref } from 'vue'
import {
  useWizardSteps,
  type WizardStep,
} from '../../../../renderer/src/composables/use-wizard-steps'

// How a wizard moves: one step at a time, never past a blocked step (nor past a later one
// while an earlier step is blocked), back freely, straight to a named step, and what a screen
// reader hears on each move.

function steps(confirmed: () => boolean): WizardStep[] {
  return [
    { key: 'review', title: 'Review' },
    { key: 'confirm', title: 'Confirm', blocked: confirmed() ? null : 'Confirm first.' },
    { key: 'run', title: 'Run', heading: 'Ready to run' },
    { key: 'done', title: 'Done' },
  ]
}

describe('useWizardSteps', () => {
  it('goes on step by step and says where it is', () => {
    const wizard = useWizardSteps(steps(() => true))
    expect(wizard.number.value).toBe(1)
    expect(wizard.isFirst.value).toBe(true)
    expect(wizard.announcement.value).toBe('Step 1 of 4: Review')
    expect(wizard.next()).toBe(true)
    expect(wizard.current.value.key).toBe('confirm')
    expect(wizard.announcement.value).toBe('Step 2 of 4: Confirm')
    wizard.next()
    wizard.next()
    expect(wizard.isLast.value).toBe(true)
    expect(wizard.next()).toBe(false)
    expect(wizard.current.value.key).toBe('done')
    expect(wizard.back()).toBe(true)
    expect(wizard.current.value.key).toBe('run')
    wizard.restart()
    expect(wizard.back()).toBe(false)
    expect(wizard.index.value).toBe(0)
  })

  it('refuses to go past a blocked step until it is unblocked, and gates the steps after it', () => {
    const confirmed = ref(false)
    const wizard = useWizardSteps(() => steps(() => confirmed.value))
    expect(wizard.blocker.value).toBeNull()
    wizard.next()
    expect(wizard.blocker.value).toBe('Confirm first.')
    expect(wizard.next()).toBe(false)
    expect(wizard.current.value.key).toBe('confirm')
    confirmed.value = true
    expect(wizard.next()).toBe(true)
    // On a later step, withdrawing the confirmation blocks again.
    confirmed.value = false
    expect(wizard.current.value.key).toBe('run')
    expect(wizard.blocker.value).toBe('Confirm first.')
    expect(wizard.next()).toBe(false)
  })

  it('jumps to a named step: back always, forward only past unblocked steps', () => {
    const confirmed = ref(false)
    const wizard = useWizardSteps(() => steps(() => confirmed.value))
    expect(wizard.goTo('done')).toBe(false)
    expect(wizard.goTo('nowhere')).toBe(false)
    confirmed.value = true
    expect(wizard.goTo('done')).toBe(true)
    confirmed.value = false
    expect(wizard.goTo('confirm')).toBe(true)
    expect(wizard.number.value).toBe(2)
  })

  it('moves an index someone else keeps (a store)', () => {
    const index = ref(2)
    const wizard = useWizardSteps(
      steps(() => true),
      index,
    )
    expect(wizard.current.value.key).toBe('run')
    wizard.back()
    expect(index.value).toBe(1)
  })
})
