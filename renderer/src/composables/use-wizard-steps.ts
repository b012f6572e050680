import { computed, ref, toValue, type MaybeRefOrGetter, type Ref } from 'vue'

/** One step of a wizard, as its step bar shows it. */
export interface WizardStep {
  /** Stable name of the step (the slot its content goes in). */
  key: string
  title: string
  description?: string
  /** The title of the step's card, when it differs from the title in the step bar. */
  heading?: string
  /** Why the user may not go past this step yet; null or absent when they may. */
  blocked?: string | null
}

/**
 * Where a wizard stands: its steps (which may change as the user answers), the current one,
 * and the moves between them. Going on is refused while the current step, or one before it,
 * is blocked, so a confirmation given in one step gates every step after it.
 *
 * `index` (0-based) may belong to someone else, such as a store that keeps the draft.
 */
export function useWizardSteps(
  steps: MaybeRefOrGetter<readonly WizardStep[]>,
  index: Ref<number> = ref(0),
) {
  const list = computed(() => toValue(steps))
  const last = computed(() => Math.max(0, list.value.length - 1))
  const current = computed<WizardStep>(
    () => list.value[Math.min(index.value, last.value)] ?? { key: '', title: '' },
  )
  /** The current step, counted from 1 (as step bars show it). */
  const number = computed(() => Math.min(index.value, last.value) + 1)
  const isFirst = computed(() => index.value <= 0)
  const isLast = computed(() => index.value >= last.value)
  /** The first reason, at or before the current step, that keeps the user from going on. */
  const blocker = computed(
    () => list.value.slice(0, index.value + 1).find((step) => step.blocked)?.blocked ?? null,
  )
  /** What a screen reader says when the step changes: "Step 2 of 4: Files". */
  const announcement = computed(
    () => `Step ${number.value} of ${list.value.length}: ${current.value.title}`,
  )

  /** Go to the next step; false (and no move) when blocked or already on the last one. */
  function next(): boolean {
    if (blocker.value !== null || isLast.value) return false
    index.value++
    return true
  }

  /** Go back one step; false on the first. */
  function back(): boolean {
    if (isFirst.value) return false
    index.value--
    return true
  }

  /** Go to the step named `key` (backwards always; forwards only past unblocked steps). */
  function goTo(key: string): boolean {
    const target = list.value.findIndex((step) => step.key === key)
    if (target === -1) return false
    const stop = list.value.slice(0, target).findIndex((step) => step.blocked)
    if (target > index.value && stop !== -1) return false
    index.value = target
    return true
  }

  /** Back to the first step. */
  function restart(): void {
    index.value = 0
  }

  return {
    steps: list,
    index,
    current,
    number,
    isFirst,
    isLast,
    blocker,
    announcement,
    next,
    back,
    goTo,
    restart,
  }
}

/** What {@link useWizardSteps} returns. */
export type WizardSteps = ReturnType<typeof useWizardSteps>
