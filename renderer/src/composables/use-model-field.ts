import { computed, type Ref, type WritableComputedRef } from 'vue'

/**
 * One field of a v-model object as a v-model of its own. Writing replaces the whole object with
 * a copy holding the new value, so the parent sees a new form on every change (its watchers and
 * the command preview rely on that). Nested: `modelField(modelField(model, 'boot'), 'kind')`.
 */
export function modelField<T extends object, K extends keyof T>(
  model: Ref<T>,
  key: K,
): WritableComputedRef<T[K]> {
  return computed({
    get: () => model.value[key],
    set: (value) => (model.value = { ...model.value, [key]: value }),
  })
}
